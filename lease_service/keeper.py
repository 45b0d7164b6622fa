"""This node's own lease: acquired for the backend, renewed ahead of expiry, re-acquired when it
vanishes from the store, announced to WatchLease watchers, and mirrored into subnet.env."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lease_service import subnetfile
from lease_service.lease import Lease, LeaseAttrs
from lease_service.netconfig import NetworkConfig
from lease_service.stream import Change, LeaseHub
from lease_service.subnet.base import AcquireError, StoreUnavailable, SubnetManager
from lease_service.wire import lease_to_proto
from proto.flannel.v1 import lease_pb2

log = logging.getLogger(__name__)
Event = lease_pb2.WatchLeaseResponse


@dataclass(frozen=True)
class KeeperSettings:
    renew_margin: float = 3600.0     #: renew this many seconds before expiry (--subnet-lease-renew-margin)
    subnet_file: Path | None = None  #: where subnet.env goes (None: not written)
    ip_masq: bool = False            #: FLANNEL_IPMASQ
    retry_initial: float = 0.5
    retry_max: float = 10.0


class LeaseKeeper:
    """Holds the lease; one task (:meth:`run`) renews and re-acquires it."""

    def __init__(self, manager: SubnetManager, config: NetworkConfig, hub: LeaseHub, settings: KeeperSettings) -> None:
        self.manager = manager
        self.config = config
        self.settings = settings
        self.lease: Lease | None = None
        self.mtu = 0
        self._attrs: LeaseAttrs | None = None
        self._lost = asyncio.Event()
        self._changed = asyncio.Event()  # wakes the renew loop when a lease is (re)acquired
        self._watchers: set[asyncio.Queue[Event]] = set()
        self._lock = asyncio.Lock()
        hub.add_listener(self._on_changes)

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
            lease = await self.manager.acquire_lease(self.config, attrs, previous)
            self._attrs, self.mtu = attrs, mtu
            if held is None:
                kind = Event.CURRENT
            elif lease.key != held.key:
                kind = Event.REACQUIRED
            else:
                kind = Event.RENEWED  # the backend asked again (it restarted): same lease, fresh attributes
            await self._install(lease, kind)
            return lease

    async def _install(self, lease: Lease, kind: int) -> None:
        """Hold ``lease`` (the caller holds the lock); subnet.env is written and fsynced off the loop."""
        self.lease = lease
        self._lost.clear()
        self._changed.set()
        if self.settings.subnet_file is not None:
            await asyncio.to_thread(subnetfile.write, self.settings.subnet_file,
                                    subnetfile.render(self.config, lease, self.mtu, self.settings.ip_masq))
        self._announce(kind, lease)

    def _announce(self, kind: int, lease: Lease) -> None:
        event = Event(kind=kind, lease=lease_to_proto(lease))  # type: ignore[arg-type]
        for queue in self._watchers:
            queue.put_nowait(event)

    def _on_changes(self, changes: Sequence[Change]) -> None:
        if self.lease is None:
            return
        for key, lease in changes:
            if key == self.lease.key and lease is None:
                log.warning("our lease %s vanished from the store", key)
                self._lost.set()

    async def watch(self) -> AsyncIterator[Event]:
        """CURRENT (once a lease is held), then RENEWED / LOST / REACQUIRED as they happen."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            if self.lease is not None:
                yield Event(kind=Event.CURRENT, lease=lease_to_proto(self.lease))
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)

    async def run(self) -> None:
        """Renew before expiry; on loss, announce it and re-acquire with back-off."""
        while True:
            lease = self.lease
            if lease is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            wait = self._seconds_until_renewal(lease)
            self._changed.clear()
            lost = asyncio.ensure_future(self._lost.wait())
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                done, _ = await asyncio.wait({lost, changed}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                changed.cancel()
            if self._lost.is_set():
                await self._reacquire(lease)
            elif not done:
                await self._renew(lease)

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
                log.info("renewal of lease %s superseded by a newer acquire; keeping %s", lease.key,
                         self.lease.key if self.lease else "none")
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
                    lease = await self.manager.acquire_lease(self.config, self._attrs, (lost.subnet, lost.ipv6_subnet))
                    await self._install(lease, Event.REACQUIRED)
                log.info("re-acquired lease %s after losing %s", lease.key, lost.key)
                return
            except StoreUnavailable as exc:
                log.warning("cannot re-acquire the lease: %s; retrying in %.1fs", exc, delay)
            except AcquireError as exc:  # e.g. the network is full: keep trying, an operator may free a subnet
                log.error("cannot re-acquire the lease: %s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max)
