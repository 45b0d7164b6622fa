"""The lease stream: one shared view of every lease, fanned out to any number of gRPC watchers.

The store side (etcd or Kubernetes) feeds :class:`LeaseHub` with whole store revisions
(:meth:`LeaseHub.reset` after a list, :meth:`LeaseHub.apply` per watch batch, :meth:`LeaseHub.progress`
for progress notifications). Each watcher gets a snapshot then SYNCED, or a resume from its cursor,
then deltas, each message built once and shared by every watcher.

A cursor is resumable from memory while the hub still holds the history after it; an older cursor
is resumed by diffing the store's state at that revision against now (``state_at``), and when even
that is impossible (compacted, from another store) the watcher gets a fresh snapshot that replaces
its state. A watcher that reads too slowly is cut loose from its backlog and gets a fresh snapshot
(FELL_BEHIND): it never stalls the others.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from lease_service import metrics
from lease_service.lease import Lease
from lease_service.wire import lease_to_proto
from proto.flannel.v1 import lease_pb2

log = logging.getLogger(__name__)

Msg = lease_pb2.WatchLeasesResponse
LeaseEvent = lease_pb2.LeaseEvent
Change = tuple[str, Lease | None]  # (key, the lease now, or None when removed)


class StateUnavailable(Exception):
    """The store cannot tell its state at an old revision (compacted, or not supported)."""


@dataclass(eq=False)
class _Watcher:
    queue: deque[Msg] = field(default_factory=deque)
    pending_events: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    fell_behind: bool = False


@dataclass(frozen=True)
class HubSettings:
    """Bounds of the lease stream."""

    history_events: int = 100_000  #: events kept in memory for resuming by cursor
    buffer_events: int = 20_000    #: events queued for one watcher before it is cut loose
    snapshot_batch: int = 500      #: leases per SNAPSHOT message when the client names no max_batch
    progress_interval: float = 10.0  #: seconds of silence before a PROGRESS message


def _same(a: Lease, b: Lease) -> bool:
    return (a.subnet, a.ipv6_subnet, a.attrs, a.node_name) == (b.subnet, b.ipv6_subnet, b.attrs, b.node_name)


class LeaseHub:
    """The current set of leases at a store revision, its recent history, and its watchers."""

    def __init__(
        self,
        store_id: str,
        settings: HubSettings = HubSettings(),
        state_at: Callable[[int], Awaitable[dict[str, Lease]]] | None = None,
    ) -> None:
        self.store_id = store_id
        self.settings = settings
        self._state_at = state_at
        self.state: dict[str, Lease] = {}
        self.revision = 0
        self._generation = 0  # counts changes of ``state``: the snapshot cache's key
        self._snapshot_cache: tuple[tuple[int, int], list[Msg]] | None = None
        self._ready = asyncio.Event()
        self._history: deque[tuple[int, Msg]] = deque()
        self._history_events = 0
        self._floor = 0  # every change after this revision is in _history
        self._watchers: set[_Watcher] = set()
        self._listeners: list[Callable[[Sequence[Change]], None]] = []

    # ---- store side -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def reset(self, leases: dict[str, Lease], revision: int) -> None:
        """The store was listed at ``revision``. The first list sets the state; a later one (after a
        compaction or reconnect) is diffed against the state and published as one delta."""
        if not self._ready.is_set():
            self.state = dict(leases)
            self.revision = revision
            self._floor = revision
            self._ready.set()
            metrics.LEASES.set(len(self.state))
            log.info("lease stream ready: %d leases at revision %d", len(leases), revision)
            return
        metrics.STORE_RELISTS.inc()
        changes: list[Change] = [(key, None) for key in self.state if key not in leases]
        changes += [(key, lease) for key, lease in leases.items()]
        log.info("store relisted at revision %d; publishing the difference", revision)
        self.apply(changes, revision)

    def apply(self, changes: Iterable[Change], revision: int) -> None:
        """Changes making up whole store revisions, up to and including ``revision``."""
        events: list[LeaseEvent] = []
        effective: list[Change] = []
        for key, lease in changes:
            old = self.state.get(key)
            if lease is None:
                if old is None:
                    continue  # never a removal of something the watchers do not have
                del self.state[key]
                events.append(LeaseEvent(type=LeaseEvent.REMOVE, lease=lease_to_proto(old)))
            else:
                if old is not None and _same(old, lease):
                    self.state[key] = lease
                    continue
                self.state[key] = lease
                events.append(LeaseEvent(type=LeaseEvent.UPSERT, lease=lease_to_proto(lease)))
            effective.append((key, lease))
        self.revision = max(self.revision, revision)
        metrics.LEASES.set(len(self.state))
        if not events:
            return
        self._generation += 1
        msg = Msg(kind=Msg.DELTA, events=events, cursor=self.cursor(self.revision))
        self._remember(self.revision, msg)
        for watcher in self._watchers:
            self._deliver(watcher, msg)
        for listener in self._listeners:
            listener(effective)

    def progress(self, revision: int) -> None:
        """Nothing changed up to ``revision``."""
        self.revision = max(self.revision, revision)

    def add_listener(self, listener: Callable[[Sequence[Change]], None]) -> None:
        """Call ``listener`` synchronously with the effective changes of every published delta."""
        self._listeners.append(listener)

    # ---- cursors ----------------------------------------------------------------------------

    def cursor(self, revision: int) -> str:
        raw = f"v1|{self.store_id}|{revision}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def parse_cursor(self, cursor: str) -> int | None:
        """The revision in a cursor of this store, or None when it is malformed or foreign."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            version, store_id, revision = raw.rsplit("|", 2) if raw.count("|") >= 2 else ("", "", "")
            if version != "v1" or store_id != self.store_id:
                return None
            value = int(revision)
        except (ValueError, UnicodeDecodeError):
            return None
        return value if value >= 0 else None

    # ---- watcher side -----------------------------------------------------------------------

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    async def watch(self, cursor: str = "", max_batch: int = 0) -> AsyncIterator[Msg]:
        """The stream for one watcher: see the module docstring."""
        await self._ready.wait()
        batch = max_batch or self.settings.snapshot_batch
        initial = await self._start(cursor, batch)
        watcher = _Watcher()
        self._watchers.add(watcher)  # no await between computing ``initial`` and this: no gap
        metrics.WATCHERS.inc()
        try:
            for msg in initial:
                metrics.EVENTS_STREAMED.inc(len(msg.events))
                yield msg
            while True:
                if watcher.fell_behind:
                    watcher.fell_behind = False
                    log.warning("a lease watcher fell behind by more than %d events; sending a fresh snapshot",
                                self.settings.buffer_events)
                    for msg in self._snapshot(Msg.FELL_BEHIND, batch):
                        metrics.EVENTS_STREAMED.inc(len(msg.events))
                        yield msg
                    continue
                if watcher.queue:
                    msg = watcher.queue.popleft()
                    watcher.pending_events -= len(msg.events)
                    metrics.EVENTS_STREAMED.inc(len(msg.events))
                    yield msg
                    continue
                watcher.wakeup.clear()
                try:
                    await asyncio.wait_for(watcher.wakeup.wait(), self.settings.progress_interval)
                except TimeoutError:
                    yield Msg(kind=Msg.PROGRESS, cursor=self.cursor(self.revision))
        finally:
            self._watchers.discard(watcher)
            metrics.WATCHERS.dec()

    async def _start(self, cursor: str, batch: int) -> list[Msg]:
        if not cursor:
            return self._snapshot(Msg.INITIAL, batch)
        revision = self.parse_cursor(cursor)
        if revision is None or revision > self.revision:
            log.info("cursor %r is not one of this store's; sending a snapshot", cursor)
            return self._snapshot(Msg.CURSOR_INVALID, batch)
        if revision >= self._floor:
            replay = [msg for rev, msg in self._history if rev > revision]
            return [*replay, Msg(kind=Msg.PROGRESS, cursor=self.cursor(self.revision))]
        if self._state_at is not None:
            try:
                old = await self._state_at(revision)
            except StateUnavailable as exc:
                log.info("cannot resume from revision %d (%s); sending a snapshot", revision, exc)
                return self._snapshot(Msg.CURSOR_COMPACTED, batch)
            return [self._diff(old)]
        return self._snapshot(Msg.CURSOR_COMPACTED, batch)

    def _diff(self, old: dict[str, Lease]) -> Msg:
        events = [LeaseEvent(type=LeaseEvent.REMOVE, lease=lease_to_proto(lease))
                  for key, lease in old.items() if key not in self.state]
        events += [LeaseEvent(type=LeaseEvent.UPSERT, lease=lease_to_proto(lease))
                   for key, lease in self.state.items() if key not in old or not _same(old[key], lease)]
        return Msg(kind=Msg.DELTA, events=events, cursor=self.cursor(self.revision))

    def _snapshot(self, reason: int, batch: int) -> list[Msg]:
        """The snapshot messages. Watchers that connect while the state stays the same share one set
        of messages (100 watchers of 10,000 leases would otherwise hold 100 copies); only the first
        message, which carries ``reset`` and the reason, is each watcher's own."""
        key = (self._generation, batch)
        if self._snapshot_cache is None or self._snapshot_cache[0] != key:
            leases = [lease_to_proto(lease) for lease in self.state.values()]
            chunks = [Msg(kind=Msg.SNAPSHOT, events=[LeaseEvent(type=LeaseEvent.UPSERT, lease=lease)
                                                     for lease in leases[start:start + batch]])
                      for start in range(0, max(len(leases), 1), batch)]
            self._snapshot_cache = (key, chunks)
        chunks = self._snapshot_cache[1]
        first = Msg()
        first.CopyFrom(chunks[0])
        first.reset, first.reason = True, reason  # type: ignore[assignment]
        return [first, *chunks[1:], Msg(kind=Msg.SYNCED, cursor=self.cursor(self.revision))]

    def _deliver(self, watcher: _Watcher, msg: Msg) -> None:
        if watcher.fell_behind:
            return
        if watcher.queue and watcher.pending_events + len(msg.events) > self.settings.buffer_events:
            watcher.queue.clear()
            watcher.pending_events = 0
            watcher.fell_behind = True
        else:
            watcher.queue.append(msg)
            watcher.pending_events += len(msg.events)
        watcher.wakeup.set()

    def _remember(self, revision: int, msg: Msg) -> None:
        self._history.append((revision, msg))
        self._history_events += len(msg.events)
        while self._history_events > self.settings.history_events and len(self._history) > 1:
            rev, old = self._history.popleft()
            self._history_events -= len(old.events)
            self._floor = rev
