"""The follower: the client side of ``WatchLeases``, streamed into a local view of every lease.

Snapshots are staged and replace the view only at SYNCED, so the kernel never loses anything to a
half snapshot; the cursor advances only with messages that carry one. The leases of the first
snapshot are also handed out as they arrive (:meth:`LeaseView.take_early`), so that the reconciler
can add the peers the kernel lacks while the rest streams: adding is safe before SYNCED, deleting
is not. :func:`follow` reads one stream into a :class:`LeaseView` and tells the reconciler when the
view changed.

The view holds each lease as its serialized message (``bytes``), never as the message itself: a lease
message parsed as part of a stream message keeps the whole stream message's memory alive while it is
held, 6.2 MB per 10,000 leases from 500-lease snapshot messages and 13.7 MB from one-lease deltas,
against 3.3 MB as bytes (and a message of its own per lease costs ~1.5 KB). The planner parses a lease
again only when it changed (:func:`~backend_service.validate.check_one`).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable

import grpc

from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

Msg = lease_pb2.WatchLeasesResponse


class LeaseView:
    """Every lease the lease service told us about, keyed by ``Lease.key``."""

    def __init__(self) -> None:
        self.leases: dict[str, bytes] = {}
        """Lease key → the lease, serialized (see the module docstring)."""
        self.synced = False  #: a whole snapshot has been applied at least once
        self.cursor = ""  #: resume from here after a reconnect
        self._staging: dict[str, bytes] | None = None
        self._changes: dict[str, bytes | None] = {}
        self._replaced = True  # the whole view changed (a snapshot): only a full reconcile will do
        self._early: deque[str] = deque()  # keys: the leases wait in the staged snapshot

    def apply(self, msg: lease_pb2.WatchLeasesResponse) -> bool:
        """Apply one message; True when the view changed (the kernel may need work), and for each part
        of the first snapshot (its leases wait in :meth:`take_early`)."""
        if msg.kind == Msg.SNAPSHOT:
            if msg.reset or self._staging is None:
                self._staging = {}
                self._early.clear()
            held, staging, early = self.leases, self._staging, not self.synced
            for event in msg.events:
                lease = event.lease
                key = sys.intern(lease.key)  # one string per key here and in the planner's maps
                raw = lease.SerializeToString()
                same = held.get(key)
                # a resumed stream's snapshot repeats what we hold: keep the bytes we have, so that the new
                # ones are freed (no second copy of 10,000 leases) and the planner sees the very lease it
                # planned (the periodic check compares them by identity)
                if same is not None and same == raw:
                    raw = same
                staging[key] = raw
                if early:
                    self._early.append(key)
            return early and bool(msg.events)
        if msg.kind == Msg.SYNCED:
            if self._staging is not None:
                self.leases = self._staging
                self._staging = None
                self._replaced = True
                self._changes.clear()
            self.synced = True
            self.cursor = msg.cursor
            return True
        if msg.kind == Msg.DELTA:
            for event in msg.events:
                key = sys.intern(event.lease.key)
                if event.type == lease_pb2.LeaseEvent.REMOVE:
                    self.leases.pop(key, None)
                    self._changes[key] = None
                elif event.type == lease_pb2.LeaseEvent.UPSERT:
                    self.leases[key] = self._changes[key] = event.lease.SerializeToString()
            if msg.cursor:
                self.cursor = msg.cursor
            return bool(msg.events)
        if msg.kind == Msg.PROGRESS and msg.cursor:
            self.cursor = msg.cursor
        return False

    def take_changes(self) -> dict[str, bytes | None] | None:
        """The leases changed by deltas since the last call (key -> lease, None when removed), or
        None when a snapshot replaced the view since (only a full reconcile will do)."""
        replaced, changes = self._replaced, self._changes
        self._replaced, self._changes = False, {}
        return None if replaced else changes

    def take_early(self, limit: int) -> dict[str, bytes]:
        """Up to ``limit`` leases of the first snapshot not taken yet (key → lease), in the order they
        came: the reconciler may add what they need before SYNCED (and must delete nothing)."""
        held = self.leases if self._staging is None else self._staging
        taken = (self._early.popleft() for _ in range(min(limit, len(self._early))))
        return {key: held[key] for key in taken if key in held}

    def early_waiting(self) -> bool:
        """Leases of the first snapshot are waiting in :meth:`take_early`."""
        return bool(self._early)

    def drop_early(self) -> None:
        """A full reconcile covers every lease: none is left to take early."""
        self._early.clear()

    def interrupted(self) -> None:
        """The stream broke: a half-received snapshot is dropped; resume from :attr:`cursor`."""
        self._staging = None
        self._early.clear()


async def follow(stub: lease_pb2_grpc.LeaseServiceStub, view: LeaseView, changed: Callable[[], None]) -> None:
    """Stream ``WatchLeases`` from ``view.cursor`` into ``view``; ``changed()`` after each change.

    Raises ``grpc.aio.AioRpcError`` when the stream breaks, and also when the lease service ends
    it (UNAVAILABLE): either way the session reconnects and resumes from the cursor.
    """
    try:
        async for msg in stub.WatchLeases(lease_pb2.WatchLeasesRequest(cursor=view.cursor)):
            if view.apply(msg):
                changed()
    finally:
        view.interrupted()
    raise grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "the lease service closed the WatchLeases stream",
    )
