"""The lease stream: one shared view of every lease, fanned out to any number of gRPC watchers.

The store side (etcd or Kubernetes) feeds :class:`LeaseHub` with whole store revisions
(:meth:`LeaseHub.reset` after a list, :meth:`LeaseHub.apply` per watch batch, :meth:`LeaseHub.progress`
for progress notifications). Each watcher gets a snapshot then SYNCED, or a resume from its cursor,
then deltas, each message built once and shared by every watcher.

Messages are held in wire form (:class:`Frame`: the serialized ``WatchLeasesResponse``), never as protobuf
objects: a lease as a protobuf object costs ~1.5 KB, serialized ~120 bytes. Each lease's UPSERT event is
encoded once when it changes; a message is its header fields joined with its events' bytes (protobuf
parses concatenated fields of a message as one message, appending repeated fields), and the gRPC method
sends the bytes as they are (:func:`lease_service.server.LeaseServicer.add_to`). Deltas that queued up for a
watcher while it was sending go out joined in one message (gRPC's cost is per message, not per byte).

The first listing is streamed while it runs: a watcher without a cursor that comes before it ends gets
each lease as soon as the store has handed it on (:meth:`LeaseHub.listed`), then SYNCED at the listing's
revision and the deltas after it; a listing that starts over starts the snapshot over (``reset``). So a
client can act on the first leases while the rest are still being read from the store.

A cursor is resumable from memory while the hub still holds the history after it; for an older cursor
(:meth:`LeaseHub.beyond_memory`) the caller may read the store's state at that revision and hand it to
:meth:`LeaseHub.watch`, which resumes by diffing it against now; when even that is impossible (compacted,
from another store) the watcher gets a fresh snapshot that replaces its state. A watcher that reads too
slowly is cut loose from its backlog and gets a fresh snapshot (FELL_BEHIND): it never stalls the others.

Data flows one way: the store pushes into the hub (the hub is the store's :class:`LeaseSink`), the hub
pushes to the gRPC watchers and to its subscribers (:meth:`LeaseHub.subscribe`: the keeper); the hub
never calls the store or a subscriber.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

from flannel_rpc import STREAM_BATCH_BYTES
from flannel_rpc.logs import LogOnce, label, shorten
from flannel_rpc.serve import MIB
from lease_service import metrics
from lease_service.lease import Lease
from lease_service.subnet.base import Change, Known
from lease_service.wire import lease_to_proto
from proto.flannel.v1 import lease_pb2

log = logging.getLogger(__name__)

Msg = lease_pb2.WatchLeasesResponse
LeaseEvent = lease_pb2.LeaseEvent
MAX_CURSOR_CHARS = 1024
_EVENT_OVERHEAD = 16  # a message's own fields, spread over its events when cutting by bytes
_HISTORY_ENTRY_BYTES = 200  # what one remembered message costs besides its bytes (objects, deque slot)


@dataclass(frozen=True, slots=True)
class Frame:
    """One ``WatchLeasesResponse`` in wire form, as held, queued and sent."""

    data: bytes
    events: int  #: how many lease events it carries


def _event(kind: LeaseEvent.Type, lease: Lease) -> bytes:
    """One lease event as the ``events`` field of a WatchLeasesResponse, in wire form."""
    data: bytes = Msg(events=[LeaseEvent(type=kind, lease=lease_to_proto(lease))]).SerializeToString()
    return data


def _fields(
    *,
    kind: Msg.Kind | None = None,
    cursor: str | None = None,
    reset: bool | None = None,
    reason: Msg.ResyncReason | None = None,
) -> bytes:
    """WatchLeasesResponse header fields in wire form (those left None are not written)."""
    data: bytes = Msg(kind=kind, cursor=cursor, reset=reset, reason=reason).SerializeToString()
    return data


@dataclass(eq=False)
class _Watcher:
    queue: deque[Frame] = field(default_factory=deque)
    pending_events: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    fell_behind: bool = False


@dataclass(eq=False)
class _ListingProgress:
    """How far one watcher got in streaming the first listing while it runs (see :meth:`LeaseHub.watch`)."""

    listing: list[bytes] | None = None  #: the listing being streamed (a new list when a listing starts over)
    sent: int = -1  #: its events that went out; -1: none, not even the message that resets
    reason: Msg.ResyncReason = Msg.INITIAL  #: the reason the snapshot's resetting message gives


@dataclass(frozen=True)
class HubSettings:
    """Bounds of the lease stream."""

    history_events: int = 100_000  #: events kept in memory for resuming by cursor
    history_bytes: int = 8 * MIB  #: and at most this much memory for them (older cursors: state_at)
    buffer_events: int = 20_000  #: events queued for one watcher before it is cut loose
    #: leases per message when the client names no max_batch: per SNAPSHOT message, and per DELTA message
    #: when queued deltas are joined (one revision alone is never split, whatever its size)
    snapshot_batch: int = 500
    batch_bytes: int = STREAM_BATCH_BYTES  #: bytes of leases per message, whatever the count
    progress_interval: float = 10.0  #: seconds of silence before a PROGRESS message


class Changes:
    """One subscriber's feed: the effective changes of every published delta, in order."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[list[Change]] = asyncio.Queue()

    def __aiter__(self) -> Changes:
        return self

    async def __anext__(self) -> list[Change]:
        return await self._queue.get()

    def _push(self, changes: list[Change]) -> None:
        self._queue.put_nowait(changes)


def _removal(upsert: bytes) -> bytes:
    """The REMOVE event of the lease whose UPSERT event is ``upsert`` (both in wire form): a removal says what
    is removed, and the hub keeps no other copy of the lease."""
    msg = Msg.FromString(upsert)
    msg.events[0].type = LeaseEvent.REMOVE
    data: bytes = msg.SerializeToString()
    return data


class LeaseHub:
    """The current set of leases at a store revision, its recent history, and its watchers."""

    def __init__(self, store_id: str, settings: HubSettings = HubSettings()) -> None:
        self.store_id = store_id
        self.settings = settings
        self.revision = 0
        self._generation = 0  # counts changes of the leases: the snapshot cache's key
        # Every lease, as its UPSERT event in wire form: the only copy the hub keeps (~170 bytes where the
        # Lease with its address objects and strings is ~750; the events compare equal when the leases do,
        # since they carry every field a watcher sees).
        self._upserts: dict[str, bytes] = {}
        self._listed: dict[str, bytes] = {}  # a listing in progress, as events (see listed)
        self._listed_changed: dict[str, Lease] = {}  # and its leases that differ from the published ones
        # The first listing's events in the order listed, for the watchers that stream it while it runs
        # (see watch): a new list object whenever a listing starts over, so a watcher can tell; once the
        # first listing is complete, _first_listing holds it (and its revision) until those watchers caught up
        self._listing: list[bytes] = []
        self._listing_grew = asyncio.Event()
        self._first_listing: tuple[list[bytes], int] | None = None
        self._early_watchers = 0
        self._snapshot_cache: tuple[tuple[int, int], list[Frame]] | None = None
        self._ready = asyncio.Event()
        self._answered = asyncio.Event()  # the store answered a listing: a lease listed, or a whole listing
        self._history: deque[tuple[int, Frame]] = deque()
        self._history_events = 0
        self._history_bytes = 0
        self._floor = 0  # every change after this revision is in _history
        self._watchers: set[_Watcher] = set()
        self._subscribers: list[Changes] = []
        self._too_large = LogOnce()

    # ---- store side -------------------------------------------------------------------------

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_answered(self) -> None:
        """Until the store has answered the first listing (a lease listed, or the whole listing done)."""
        await self._answered.wait()

    def known(self) -> Known | None:
        """Every lease, by key, as its UPSERT event in wire form (the hub's own map: read it without awaiting
        in between) once the first listing is complete; while it runs, the leases it listed so far, in the
        store's key order, and the last key listed; None before it listed any."""
        if self._ready.is_set():
            return Known(self._upserts)
        if self._listed:
            return Known(self._listed, after=next(reversed(self._listed)))
        return None

    def set_store(self, store_id: str) -> None:
        """The store's identity as of the latest list. When it changed (etcd restored into a new cluster),
        no cursor handed out before can be resumed: the history is dropped."""
        if store_id != self.store_id:
            if self._ready.is_set():
                log.warning(
                    "the store is now %s (was %s): cursors handed out before get a fresh snapshot",
                    store_id,
                    self.store_id,
                )
            self.store_id = store_id
            self._history.clear()
            self._history_events = self._history_bytes = 0
            self._floor = self.revision

    def _admit(self, key: str, lease: Lease | None) -> bytes | None:
        """``lease``'s UPSERT event in wire form, or None when there is no lease or it alone is larger than
        a stream message may be (LEASE_TOO_LARGE: refused by name, logged once per change, rather than
        wedging every watcher)."""
        if lease is None:
            self._too_large.forget(key)
            return None
        event = _event(LeaseEvent.UPSERT, lease)
        size = len(event)
        if size + _EVENT_OVERHEAD <= self.settings.batch_bytes:
            self._too_large.forget(key)
            return event
        if self._too_large.first(key, lease.mod_revision or size):
            metrics.CORRUPT_LEASES.inc()
            log.warning(
                "skipping lease %s: it is %d bytes, more than one stream message may carry (%d) "
                "(LEASE_TOO_LARGE)",
                label(key),
                size,
                self.settings.batch_bytes,
            )
        return None

    def listed(self, key: str, lease: Lease) -> None:
        """One lease of a listing in progress, kept as its wire-form event (see :meth:`reset`); a lease that
        differs from the one published is also kept whole, for the subscribers."""
        self._answered.set()
        event = self._admit(key, lease)
        if event is None:
            return  # too large: left out, as from any listing
        self._listed[key] = event
        if self._ready.is_set():
            if self._upserts.get(key) != event:
                self._listed_changed[key] = lease
        else:
            self._listing.append(event)
            self._listing_grew.set()

    def discard_listed(self) -> None:
        """Forget what :meth:`listed` was given since the last :meth:`reset` (a listing that starts over)."""
        self._listed, self._listed_changed = {}, {}
        if not self._ready.is_set():
            self._listing = []  # a new list: watchers streaming the old one start over
            self._listing_grew.set()

    def reset(self, leases: Mapping[str, Lease], revision: int) -> None:
        """The store was listed at ``revision``: every valid lease is one given here or to :meth:`listed`
        since the last reset. The first list sets the state; a later one (after a compaction or reconnect)
        is diffed against the state and published as one delta."""
        self._answered.set()
        for key, lease in leases.items():
            self.listed(key, lease)
        listed, changed, order = self._listed, self._listed_changed, self._listing
        self.discard_listed()
        if not self._ready.is_set():
            self._upserts = listed
            self.revision = revision
            self._floor = revision
            if self._early_watchers:  # they stream ``order``: kept until they are past it (see watch)
                self._first_listing = (order, revision)
            self._ready.set()
            metrics.LEASES.set(len(self._upserts))
            log.info("lease stream ready: %d leases at revision %d", len(listed), revision)
            return
        metrics.STORE_RELISTS.inc()
        changes: list[Change] = [(key, None) for key in self._upserts if key not in listed]
        changes += changed.items()
        log.info("store relisted at revision %d; publishing the difference", revision)
        self.apply(changes, revision)

    def apply(self, changes: Iterable[Change], revision: int) -> None:
        """Changes making up whole store revisions, up to and including ``revision``."""
        events: list[bytes] = []
        effective: list[Change] = []
        for key, lease in changes:
            old = self._upserts.get(key)
            event = self._admit(key, lease)
            if event is None or lease is None:
                if old is None:
                    continue  # never a removal of something the watchers do not have
                del self._upserts[key]
                events.append(_removal(old))
                lease = None
            else:
                self._upserts[key] = event
                if event == old:
                    continue  # rewritten unchanged (a renewal, a heartbeat): nothing a watcher sees
                events.append(event)
            effective.append((key, lease))
        self.revision = max(self.revision, revision)
        metrics.LEASES.set(len(self._upserts))
        if not events:
            return
        self._generation += 1
        self._snapshot_cache = None  # stale: not kept (10,000 leases: ~1.6 MB) until the next watcher asks
        # One revision is one message unless its events exceed the byte cap (a relist after a long outage):
        # then only the last part carries the cursor, so a client cut off in between resumes before it.
        for msg in self._deltas(events):
            self._remember(self.revision, msg)
            for watcher in self._watchers:
                self._deliver(watcher, msg)
        for subscriber in self._subscribers:
            subscriber._push(effective)

    def progress(self, revision: int) -> None:
        """Nothing changed up to ``revision``."""
        self.revision = max(self.revision, revision)

    def subscribe(self) -> Changes:
        """A feed of the effective changes of every delta published from now on."""
        subscriber = Changes()
        self._subscribers.append(subscriber)
        return subscriber

    # ---- cursors ----------------------------------------------------------------------------

    def cursor(self, revision: int) -> str:
        raw = f"v1|{self.store_id}|{revision}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def parse_cursor(self, cursor: str) -> tuple[int | None, str]:
        """The revision in a cursor of this store, or None and why it cannot be resumed from."""
        if len(cursor) > MAX_CURSOR_CHARS:
            return None, f"{len(cursor)} characters long"
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None, "not a cursor this server wrote"
        parts = raw.split("|")
        if len(parts) < 3 or parts[0] != "v1":
            return None, "not a cursor this server wrote"
        store_id, revision = "|".join(parts[1:-1]), parts[-1]
        if store_id != self.store_id:
            return None, f"from another store ({shorten(store_id)}, this is {self.store_id})"
        if not (revision.isascii() and revision.isdigit() and len(revision) <= 20):
            return None, f"revision {shorten(revision)} is not a number"
        value = int(revision)
        if value == 0:
            return None, "revision 0 names no state of the store"
        if value > self.revision:
            return None, f"revision {value} is ahead of this store's {self.revision}"
        return value, ""

    # ---- watcher side -----------------------------------------------------------------------

    @staticmethod
    def comparable(lease: Lease) -> bytes:
        """``lease`` as the hub compares it with the leases it has (its UPSERT event in wire form): what a
        store's state at an old revision is kept as (:meth:`SubnetManager.state_at`) for :meth:`watch`."""
        return _event(LeaseEvent.UPSERT, lease)

    def beyond_memory(self, cursor: str) -> int | None:
        """The revision of a valid ``cursor`` older than the history in memory: a resume from it needs
        the store's state at that revision (see :meth:`watch`); None for any other cursor."""
        if not cursor:
            return None
        revision, _ = self.parse_cursor(cursor)
        return revision if revision is not None and revision < self._floor else None

    async def watch(
        self, cursor: str = "", max_batch: int = 0, old_state: Mapping[str, bytes] | None = None
    ) -> AsyncIterator[bytes]:
        """The stream for one watcher, each message a ``WatchLeasesResponse`` in wire form: see the module
        docstring. ``old_state`` is the store's state at the cursor's revision when that is
        :meth:`beyond_memory`, each lease as :meth:`comparable` makes it (None: it could not be read)."""
        batch = max_batch or self.settings.snapshot_batch
        if not cursor and not self._ready.is_set():
            progress = _ListingProgress()
            self._early_watchers += 1
            try:
                async for frame in self._while_listing(batch, progress):
                    metrics.EVENTS_STREAMED.inc(frame.events)
                    yield frame.data
                initial = self._after_listing(batch, progress)
            finally:
                self._early_watchers -= 1
                if not self._early_watchers:
                    self._first_listing = None  # every watcher that streamed the listing is past it
        else:
            await self._ready.wait()
            initial = self._start(cursor, batch, old_state)
        watcher = _Watcher()
        self._watchers.add(watcher)  # no await between computing ``initial`` and this: no gap
        metrics.WATCHERS.inc()
        try:
            for msg in initial:
                metrics.EVENTS_STREAMED.inc(msg.events)
                yield msg.data
            while True:
                if watcher.fell_behind:
                    watcher.fell_behind = False
                    log.warning(
                        "a lease watcher fell behind by more than %d events; sending a fresh snapshot",
                        self.settings.buffer_events,
                    )
                    for msg in self._snapshot(Msg.FELL_BEHIND, batch):
                        metrics.EVENTS_STREAMED.inc(msg.events)
                        yield msg.data
                    continue
                if watcher.queue:
                    data, events = self._next_delta(watcher, batch)
                    metrics.EVENTS_STREAMED.inc(events)
                    yield data
                    continue
                watcher.wakeup.clear()
                try:
                    async with asyncio.timeout(self.settings.progress_interval):
                        await watcher.wakeup.wait()
                except TimeoutError:
                    yield _fields(kind=Msg.PROGRESS, cursor=self.cursor(self.revision))
        finally:
            self._watchers.discard(watcher)
            metrics.WATCHERS.dec()

    async def _while_listing(self, batch: int, progress: _ListingProgress) -> AsyncIterator[Frame]:
        """The first listing's leases as SNAPSHOT messages as they are listed, until it is complete. The
        first message resets (INITIAL); so does the first of a listing that started over after some of the
        one before went out (STORE_RESYNC). ``progress``: what of which listing went out."""
        while not self._ready.is_set():
            listing = self._listing
            if progress.listing is not listing:
                if progress.sent >= 0:
                    progress.reason = Msg.STORE_RESYNC  # the listing started over after some of it went out
                progress.listing, progress.sent = listing, -1
            start = max(progress.sent, 0)
            if len(listing) > start:
                part = self._chunks(listing[start : start + batch], batch)[0]
                head = _fields(kind=Msg.SNAPSHOT)
                if progress.sent < 0:
                    head += _fields(reset=True, reason=progress.reason)
                progress.sent = start + len(part)
                yield Frame(head + b"".join(part), len(part))
                continue
            self._listing_grew.clear()
            await self._listing_grew.wait()

    def _after_listing(self, batch: int, progress: _ListingProgress) -> list[Frame]:
        """What a watcher that streamed the first listing still needs once it is complete: the rest of it,
        SYNCED at its revision and the deltas since; or the whole of it from the start (a reset) when what
        went out was of a listing that started over; or a fresh snapshot when the deltas since are no longer
        all in memory."""
        first = self._first_listing
        if first is None or first[1] < self._floor:
            return self._snapshot(progress.reason, batch)
        events, revision = first
        sent = progress.sent if progress.listing is events else -1
        if sent < 0 and progress.sent >= 0:
            progress.reason = Msg.STORE_RESYNC
        head = _fields(kind=Msg.SNAPSHOT)
        rest = events[max(sent, 0) :]
        frames = (
            [Frame(head + b"".join(part), len(part)) for part in self._chunks(rest, batch)] if rest else []
        )
        if sent < 0:  # this is the whole snapshot: its first message resets (one empty one, if need be)
            frames = frames or [Frame(head, 0)]
            frames[0] = Frame(frames[0].data + _fields(reset=True, reason=progress.reason), frames[0].events)
        frames.append(Frame(_fields(kind=Msg.SYNCED, cursor=self.cursor(revision)), 0))
        frames += [msg for rev, msg in self._history if rev > revision]
        return frames

    def _start(self, cursor: str, batch: int, old_state: Mapping[str, bytes] | None) -> list[Frame]:
        if not cursor:
            return self._snapshot(Msg.INITIAL, batch)
        revision, why = self.parse_cursor(cursor)
        if revision is None:
            log.info(
                "cannot resume from cursor %s: %s; sending a snapshot (CURSOR_INVALID)", shorten(cursor), why
            )
            return self._snapshot(Msg.CURSOR_INVALID, batch)
        if revision >= self._floor:
            replay = [msg for rev, msg in self._history if rev > revision]
            return [*replay, Frame(_fields(kind=Msg.PROGRESS, cursor=self.cursor(self.revision)), 0)]
        if old_state is not None:
            return self._diff(old_state)
        return self._snapshot(Msg.CURSOR_COMPACTED, batch)

    def _diff(self, old: Mapping[str, bytes]) -> list[Frame]:
        events = [_removal(upsert) for key, upsert in old.items() if key not in self._upserts]
        events += [event for key, event in self._upserts.items() if old.get(key) != event]
        return self._deltas(events)

    def _deltas(self, events: list[bytes]) -> list[Frame]:
        """DELTA messages of ``events``: one, unless they exceed the byte cap; only the last carries the
        cursor, so that a client cut off in between resumes before them."""
        parts = self._chunks(events, len(events) or 1)
        head = _fields(kind=Msg.DELTA)
        last = _fields(cursor=self.cursor(self.revision))
        return [
            Frame(head + b"".join(part) + (last if number == len(parts) else b""), len(part))
            for number, part in enumerate(parts, 1)
        ]

    def _snapshot(self, reason: Msg.ResyncReason, batch: int) -> list[Frame]:
        """The snapshot messages. Watchers that connect while the state stays the same share one set
        of messages (100 watchers of 10,000 leases would otherwise hold 100 copies); only the first
        message, which carries ``reset`` and the reason, is each watcher's own."""
        key = (self._generation, batch)
        if self._snapshot_cache is None or self._snapshot_cache[0] != key:
            head = _fields(kind=Msg.SNAPSHOT)
            chunks = [
                Frame(head + b"".join(part), len(part))
                for part in self._chunks(list(self._upserts.values()), batch)
            ]
            self._snapshot_cache = (key, chunks)
        chunks = self._snapshot_cache[1]
        first = Frame(chunks[0].data + _fields(reset=True, reason=reason), chunks[0].events)
        return [first, *chunks[1:], Frame(_fields(kind=Msg.SYNCED, cursor=self.cursor(self.revision)), 0)]

    def _chunks(self, events: list[bytes], batch: int) -> list[list[bytes]]:
        """``events`` cut into parts of at most ``batch`` events and :attr:`HubSettings.batch_bytes` bytes
        (never empty: no events give one empty part). Every event fits alone (see :meth:`_admit`)."""
        parts: list[list[bytes]] = [[]]
        size = 0
        for event in events:
            cost = len(event) + _EVENT_OVERHEAD
            if parts[-1] and (len(parts[-1]) >= batch or size + cost > self.settings.batch_bytes):
                parts.append([])
                size = 0
            parts[-1].append(event)
            size += cost
        return parts

    def _next_delta(self, watcher: _Watcher, batch: int) -> tuple[bytes, int]:
        """The watcher's next message and its event count: its oldest queued delta, joined with the deltas
        queued after it while they fit one message (``batch`` events, :attr:`HubSettings.batch_bytes`).
        gRPC's cost is per message whatever its size, so a watcher that fell behind by many revisions (100
        watchers of 2,000 single-lease revisions: 200,000 messages) catches up in a few. Concatenated DELTA
        messages parse as one: their events appended in order, the last cursor winning. A revision is
        never split: a queued delta is joined whole or not at all."""
        queue = watcher.queue
        first = queue.popleft()
        parts, events, size = [first.data], first.events, len(first.data)
        while (
            queue
            and events + queue[0].events <= batch
            and size + len(queue[0].data) <= self.settings.batch_bytes
        ):
            msg = queue.popleft()
            parts.append(msg.data)
            events += msg.events
            size += len(msg.data)
        watcher.pending_events -= events
        return (first.data if len(parts) == 1 else b"".join(parts)), events

    def _deliver(self, watcher: _Watcher, msg: Frame) -> None:
        if watcher.fell_behind:
            return
        if watcher.queue and watcher.pending_events + msg.events > self.settings.buffer_events:
            watcher.queue.clear()
            watcher.pending_events = 0
            watcher.fell_behind = True
        else:
            watcher.queue.append(msg)
            watcher.pending_events += msg.events
        watcher.wakeup.set()

    def _remember(self, revision: int, msg: Frame) -> None:
        self._history.append((revision, msg))
        self._history_events += msg.events
        self._history_bytes += len(msg.data) + _HISTORY_ENTRY_BYTES
        while len(self._history) > 1 and (
            self._history_events > self.settings.history_events
            or self._history_bytes > self.settings.history_bytes
        ):
            rev, old = self._history.popleft()
            self._history_events -= old.events
            self._history_bytes -= len(old.data) + _HISTORY_ENTRY_BYTES
            self._floor = rev
