"""This node's own lease: acquired for the backend, renewed ahead of expiry, re-acquired when it
vanishes from the store, announced to WatchLease watchers, and mirrored into subnet.env."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flannel_rpc.logs import LogOnce
from lease_service import subnetfile
from lease_service.lease import Lease, LeaseAttrs
from lease_service.netconfig import NetworkConfig
from lease_service.subnet.base import AcquireError, Change, Known, StoreUnavailable, SubnetManager
from lease_service.wire import lease_to_proto
from proto.flannel.v1 import lease_pb2

log = logging.getLogger(__name__)
Event = lease_pb2.WatchLeaseResponse


@dataclass(frozen=True)
class KeeperSettings:
    renew_margin: float = 3600.0  #: renew this many seconds before expiry (--subnet-lease-renew-margin)
    subnet_file: Path | None = None  #: where subnet.env goes (None: not written)
    ip_masq: bool = False  #: FLANNEL_IPMASQ
    retry_initial: float = 0.5
    retry_max: float = 10.0
    conflict_retry_initial: float = 1.0  #: a second conflict soon after the first waits this long, doubling
    conflict_retry_max: float = 60.0
    conflict_quiet: float = 600.0  #: after this long without a conflict, restores are immediate again


class LeaseKeeper:
    """Holds the lease; one task (:meth:`run`) follows the store's changes to it (``changes``: the lease
    hub's subscription), renews it and re-acquires it."""

    def __init__(
        self,
        manager: SubnetManager,
        config: NetworkConfig,
        changes: AsyncIterable[Sequence[Change]],
        settings: KeeperSettings,
        known: Callable[[], Known | None] | None = None,
    ) -> None:
        self.manager = manager
        self._known = known
        """The leases as the lease stream holds them (:meth:`LeaseHub.known`), for the store to choose the
        backend's lease from; while the stream is still listing, the leases listed so far, and the store
        lists for itself only the keys after them (its own listing decodes nothing but the values that may
        name our address, much less than the stream's listing, which the backend would otherwise wait for;
        listing them all again doubled the store's work while the stream listed: AcquireLease took 0.24 s
        at 5,000 leases and 0.44-0.51 s at 10,000)."""
        self.config = config
        self.settings = settings
        self.lease: Lease | None = None
        self.mtu = 0
        self._attrs: LeaseAttrs | None = None
        self._lost = asyncio.Event()
        self._changed = asyncio.Event()  # wakes the renew loop when a lease is (re)acquired
        self._watchers: set[asyncio.Queue[Event]] = set()
        self._lock = asyncio.Lock()
        # Own-key integrity: what we wrote lately (a change to our key that is none of these is someone
        # else's), the other writer's lease, and the last conflict for status.
        self._written: deque[tuple[object, ...]] = deque(maxlen=8)
        self._intruder: Lease | None = None
        self._intruded = asyncio.Event()
        self.conflict = ""  #: the last conflict, for WatchLease (and so the backend's GetStatus)
        self._conflicts_logged = LogOnce(capacity=64)
        self._conflict_delay = settings.conflict_retry_initial
        self._last_conflict = 0.0
        self._changes = changes

    async def acquire(self, attrs: LeaseAttrs, mtu: int) -> Lease:
        """Acquire (or take back) the lease with the backend's attributes; writes subnet.env."""
        async with self._lock:
            held = self.lease
            if held is not None:
                previous = (held.subnet, held.ipv6_subnet)
            elif self.settings.subnet_file is not None:
                previous = subnetfile.read_previous(self.settings.subnet_file)
            else:
                previous = (None, None)
            self._written.append(self._fingerprint(attrs))
            known = self._known() if self._known is not None else None
            lease = await self.manager.acquire_lease(self.config, attrs, previous, known)
            self._written.append(self._fingerprint(lease.attrs))
            self._attrs, self.mtu = attrs, mtu
            if held is None:
                kind = Event.CURRENT
            elif lease.key != held.key:
                kind = Event.REACQUIRED
            else:
                kind = Event.RENEWED  # the backend asked again (it restarted): same lease, fresh attributes
            await self._install(lease, kind)
            return lease

    async def _install(self, lease: Lease, kind: Event.Kind) -> None:
        """Hold ``lease`` (the caller holds the lock); subnet.env is written and fsynced off the loop."""
        self.lease = lease
        self._lost.clear()
        self._changed.set()
        if self.settings.subnet_file is not None:
            await asyncio.to_thread(
                subnetfile.write,
                self.settings.subnet_file,
                subnetfile.render(self.config, lease, self.mtu, self.settings.ip_masq),
            )
        self._announce(kind, lease)

    def _announce(self, kind: Event.Kind, lease: Lease, conflict: str = "") -> None:
        event = Event(kind=kind, lease=lease_to_proto(lease), conflict=conflict)
        for queue in self._watchers:
            queue.put_nowait(event)

    def _fingerprint(self, attrs: LeaseAttrs) -> tuple[object, ...]:
        """What other nodes route by, for the families this network runs."""
        v4, v6 = self.config.enable_ipv4, self.config.enable_ipv6
        return (
            attrs.public_ip if v4 else None,
            attrs.public_ipv6 if v6 else None,
            attrs.backend_type,
            attrs.backend_data if v4 else "",
            attrs.backend_v6_data if v6 else "",
        )

    def _on_changes(self, changes: Sequence[Change]) -> None:
        if self.lease is None:
            return
        for key, lease in changes:
            if key != self.lease.key:
                continue
            if lease is None:
                log.warning("our lease %s vanished from the store", key)
                self._lost.set()
            elif self._fingerprint(lease.attrs) not in self._written:
                self._intruder = lease  # a change we did not make: another writer (OWN_LEASE_CONFLICT)
                self._intruded.set()

    async def watch(self) -> AsyncIterator[Event]:
        """CURRENT (once a lease is held), then RENEWED / LOST / REACQUIRED as they happen."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            if self.lease is not None:
                yield Event(kind=Event.CURRENT, lease=lease_to_proto(self.lease))
                if self.conflict:
                    yield Event(kind=Event.CONFLICT, lease=lease_to_proto(self.lease), conflict=self.conflict)
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    async def _follow(self) -> None:
        async for changes in self._changes:
            self._on_changes(changes)

    async def run(self) -> None:
        """Follow the store's changes; renew before expiry; on loss, announce it and re-acquire with
        back-off."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow(), name="lease-keeper-changes")
            await self._keep()

    async def _keep(self) -> None:
        while True:
            lease = self.lease
            if lease is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            wait = self._seconds_until_renewal(lease)
            self._changed.clear()
            lost = asyncio.create_task(self._lost.wait())
            changed = asyncio.create_task(self._changed.wait())
            intruded = asyncio.create_task(self._intruded.wait())
            try:
                done, _ = await asyncio.wait(
                    {lost, changed, intruded}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                lost.cancel()
                changed.cancel()
                intruded.cancel()
            if self._lost.is_set():
                await self._reacquire(lease)
            elif self._intruded.is_set():
                await self._restore(lease)
            elif not done:
                await self._renew(lease)

    async def _restore(self, held: Lease) -> None:
        """Another writer changed our key (e.g. the same key with another PublicIP): name it once per other
        writer, tell WatchLease watchers, and write our lease back (waiting, doubling, when it recurs, so
        that two writers never fight in a tight loop)."""
        intruder, self._intruder = self._intruder, None
        self._intruded.clear()
        if intruder is None or self._attrs is None:
            return
        other = intruder.attrs.public_ip or intruder.attrs.public_ipv6 or "none"
        ours = held.attrs.public_ip or held.attrs.public_ipv6
        self.conflict = (
            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}: lease {held.key} was overwritten by another "
            f"writer with PublicIP {other} (ours: {ours}); restored"
        )
        if self._conflicts_logged.first(held.key, str(other)):
            log.error(
                "lease %s was changed by another writer: PublicIP %s (ours: %s); restoring ours "
                "(OWN_LEASE_CONFLICT)",
                held.key,
                other,
                ours,
            )
        self._announce(Event.CONFLICT, intruder, conflict=self.conflict)
        now = asyncio.get_running_loop().time()
        if now - self._last_conflict < self.settings.conflict_quiet and self._last_conflict:
            await asyncio.sleep(self._conflict_delay)
            self._conflict_delay = min(self._conflict_delay * 2, self.settings.conflict_retry_max)
        else:
            self._conflict_delay = self.settings.conflict_retry_initial
        self._last_conflict = now
        try:
            async with self._lock:
                self._written.append(self._fingerprint(self._attrs))
                lease = await self.manager.restore_lease(self.config, held, self._attrs)
                self._written.append(self._fingerprint(lease.attrs))
                await self._install(lease, Event.RENEWED)
        except (StoreUnavailable, AcquireError) as exc:
            log.warning("cannot restore lease %s: %s; retrying", held.key, exc)
            self._intruder = intruder
            self._intruded.set()
            await asyncio.sleep(self.settings.retry_initial)
            return
        log.info("restored lease %s (PublicIP %s)", lease.key, ours)

    def _seconds_until_renewal(self, lease: Lease) -> float | None:
        if lease.expiration is None:
            return None  # reservations never expire
        remaining = (lease.expiration - datetime.now(UTC)).total_seconds()
        return max(remaining - self.settings.renew_margin, 0.0)

    async def _renew(self, lease: Lease) -> None:
        try:
            renewed = await self.manager.renew_lease(self.config, lease)
        except StoreUnavailable as exc:
            log.warning("cannot renew lease %s: %s; retrying", lease.key, exc)
            await asyncio.sleep(self.settings.retry_initial)
            return
        if renewed is None:
            self._lost.set()
            return
        async with self._lock:
            if self.lease is not lease:
                # an acquire or re-acquire replaced the lease while the renewal was on its way: the
                # newer lease stands, this renewal of the older one is dropped
                log.info(
                    "renewal of lease %s superseded by a newer acquire; keeping %s",
                    lease.key,
                    self.lease.key if self.lease else "none",
                )
                return
            self.lease = renewed
        log.info("renewed lease %s until %s", renewed.key, renewed.expiration)
        self._announce(Event.RENEWED, renewed)

    async def _reacquire(self, lost: Lease) -> None:
        self._announce(Event.LOST, lost)
        delay = self.settings.retry_initial
        while True:
            try:
                async with self._lock:
                    assert self._attrs is not None
                    self._written.append(self._fingerprint(self._attrs))
                    lease = await self.manager.acquire_lease(
                        self.config, self._attrs, (lost.subnet, lost.ipv6_subnet)
                    )
                    self._written.append(self._fingerprint(lease.attrs))
                    await self._install(lease, Event.REACQUIRED)
                log.info("re-acquired lease %s after losing %s", lease.key, lost.key)
                return
            except StoreUnavailable as exc:
                log.warning("cannot re-acquire the lease: %s; retrying in %.1fs", exc, delay)
            except (
                AcquireError
            ) as exc:  # e.g. the network is full: keep trying, an operator may free a subnet
                log.error("cannot re-acquire the lease: %s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max)
