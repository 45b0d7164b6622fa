"""Subnet manager on etcd v3 with flannel's key layout, so flannel nodes and ours share one etcd.

``<prefix>/config`` holds the network config; ``<prefix>/subnets/<key>`` hold leases bound to an
etcd lease (TTL 24 h by default). A key without an etcd lease is a reservation: never taken by
another node, kept as it is by the node whose public IP it names.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeVar

from flannel_rpc.logs import LogOnce, label
from lease_service import metrics
from lease_service.etcd import EtcdClient, EtcdError, EtcdUnavailable, KeyValue, WatchCompacted
from lease_service.lease import (
    MALFORMED,
    CorruptLease,
    Lease,
    LeaseAttrs,
    SubnetPair,
    check_against_config,
    decode_lease,
    encode_attrs,
    make_subnet_key,
    parse_subnet_key,
)
from lease_service.netconfig import ConfigError, NetworkConfig, parse_network_config, subnet_at
from lease_service.subnet.base import (
    AcquireError,
    Change,
    Known,
    LeaseSink,
    StateUnavailable,
    StoreUnavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PREFIX = "/coreos.com/network"
DEFAULT_LEASE_TTL = 24 * 3600
ACQUIRE_ATTEMPTS = 20


class EtcdSubnetManager:
    """flannel's etcd subnet manager, on our asyncio etcd client."""

    def __init__(
        self, client: EtcdClient, prefix: str = DEFAULT_PREFIX, lease_ttl: int = DEFAULT_LEASE_TTL
    ) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.subnets_prefix = f"{self.prefix}/subnets/"
        self.lease_ttl = lease_ttl
        self._reported = LogOnce()

    @property
    def store_id(self) -> str:
        """etcd's cluster id (from the last read's header) and the prefix: a cursor names both, so a cursor
        of another etcd cluster with the same prefix is never resumed here."""
        return f"etcd:{self.client.cluster_id:016x}:{self.prefix}"

    async def close(self) -> None:
        await self.client.close()

    # ---- config -----------------------------------------------------------------------------

    async def get_network_config(self) -> NetworkConfig:
        key = f"{self.prefix}/config"
        kv, _ = await self._store(self.client.get(key))
        if kv is None:
            raise ConfigError(f"no network config in etcd at {key}: put flannel's config JSON there")
        return parse_network_config(kv.value, source=f"etcd key {key}")

    async def stored_public_ips(self) -> tuple[IPv4Address | None, IPv6Address | None]:
        """etcd keeps no public IP per node apart from the leases: the flags stand."""
        return None, None

    # ---- reading leases ---------------------------------------------------------------------

    def _decode(self, config: NetworkConfig, kv: KeyValue) -> Lease | None:
        """The lease at ``kv``, or None: a rejection, logged once per change of that key (its mod_revision)."""
        key = kv.key[len(self.subnets_prefix) :]
        try:
            lease = decode_lease(key, kv.value, store_lease_id=kv.lease, mod_revision=kv.mod_revision)
            check_against_config(lease, config)
        except CorruptLease as exc:
            reason, message = exc.reason, str(exc)
        except Exception as exc:  # noqa: BLE001 - no value may stop the service: any failure names the key
            reason, message = MALFORMED, f"lease {label(key)}: unusable ({type(exc).__name__})"
        else:
            self._reported.forget(kv.key)
            return lease
        if self._reported.first(kv.key, kv.mod_revision):
            metrics.CORRUPT_LEASES.inc()
            log.warning("skipping corrupt lease at %s: %s (%s)", label(kv.key), message, reason)
        return None

    async def _list_into(self, config: NetworkConfig, hub: LeaseSink) -> int:
        """Every valid lease handed to ``hub`` as its page arrives (``hub.listed``: the hub keeps each in wire
        form, so the 10,000 decoded leases of a listing, ~7 MB, are never held at once); the revision."""

        def decode(kv: KeyValue) -> None:
            lease = self._decode(config, kv)
            if lease is not None:
                hub.listed(lease.key, lease)

        hub.discard_listed()  # what an earlier, failed listing handed on
        _, revision = await self._store(
            self.client.list_prefix(self.subnets_prefix, decode, restarted=hub.discard_listed)
        )
        return revision

    async def state_at(
        self, config: NetworkConfig, revision: int, keep: Callable[[Lease], T]
    ) -> dict[str, T]:
        """Every valid lease as it was at ``revision``, as ``keep`` makes of it when it is decoded (page by
        page: neither the raw listing nor the decoded leases are held); raises StateUnavailable when
        compacted."""

        def decode(kv: KeyValue) -> tuple[str, T] | None:
            lease = self._decode(config, kv)
            return None if lease is None else (lease.key, keep(lease))

        try:
            kept, _ = await self._store(self.client.list_prefix_at(self.subnets_prefix, revision, decode))
        except StoreUnavailable as exc:
            raise StateUnavailable(str(exc)) from exc
        return dict(kept)

    # ---- the node's own lease ---------------------------------------------------------------

    async def acquire_lease(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous: SubnetPair,
        known: Known | None = None,
    ) -> Lease:
        """As flannel: the lease naming our public IP, else ``previous``, else a random free subnet, taken
        with a create-if-absent transaction. The first attempt chooses from ``known`` when given (the leases
        the lease stream holds, listed and watched: no listing of its own on the path to the backend's first
        peer; only the keys that may name our IPv4 address are read again, and while the stream still lists,
        the keys after those it listed so far); a new subnet that turns out to
        be taken (``known`` lags etcd, or leaves out a stored value it could not use) is chosen again from
        a listing of etcd itself, as every later attempt is."""
        value = encode_attrs(attrs)

        def scan(kv: KeyValue) -> str | Lease:
            """The lease when it is ours, else its key: the listing's values are not kept (10,000 of them
            held at once raised the lease service's peak RSS by ~10 MB)."""
            if self._may_be_mine(kv.value, attrs):
                lease = self._decode(config, kv)
                if lease is not None and self._is_mine(lease, attrs):
                    return lease
            return kv.key[len(self.subnets_prefix) :]

        for attempt in range(ACQUIRE_ATTEMPTS):
            listing: list[str | Lease]
            if attempt == 0 and known is not None and attrs.public_ip is not None:
                listing = await self._known_listing(known, str(attrs.public_ip).encode(), scan)
            else:
                listing, _ = await self._store(
                    self.client.list_prefix(self.subnets_prefix, scan, urgent=True)
                )
            mine = [item for item in listing if isinstance(item, Lease)]
            if mine:
                lease = await self._refresh(mine[0], attrs, value)
                if lease is not None:
                    return lease
                continue
            subnet, ipv6 = self._choose(config, listing, previous)
            del listing
            key = make_subnet_key(subnet, ipv6)
            lease_id = await self._store(self.client.grant(self.lease_ttl))
            if await self._store(self.client.create(self.subnets_prefix + key, value, lease=lease_id)):
                log.info("acquired lease %s for %s", key, attrs.public_ip or attrs.public_ipv6)
                return self._held(key, subnet, ipv6, attrs, lease_id)
            await self._revoke_quietly(lease_id)
            log.info("subnet %s was taken by another node meanwhile; choosing again", key)
        raise AcquireError(
            f"could not acquire a lease under {self.subnets_prefix} after {ACQUIRE_ATTEMPTS} attempts"
        )

    async def _known_listing(
        self, known: Known, address: bytes, scan: Callable[[KeyValue], str | Lease]
    ) -> list[str | Lease]:
        """``known``'s keys, as :meth:`acquire_lease`'s listing has them; the leases whose event holds our
        IPv4 address's text (the event has the address as text, in its one form) read from etcd again and
        scanned as a listing's are (their value and mod_revision, which the takeover is conditional on); the
        keys after ``known.after`` listed from etcd and scanned. Keys listed at two revisions are no risk:
        a subnet taken meanwhile is refused by the create-if-absent transaction, a lease of ours changed
        meanwhile by the takeover's condition, and either is chosen again from a listing of etcd."""
        listing: list[str | Lease] = []
        maybe: list[str] = []
        for key, event in known.leases.items():  # no await in this loop: the hub's live map
            listing.append(key)
            if address in event:
                maybe.append(key)
        if known.after is not None:
            rest: list[str | Lease]
            rest, _ = await self._store(
                self.client.list_prefix(
                    self.subnets_prefix, scan, after=self.subnets_prefix + known.after, urgent=True
                )
            )
            listing.extend(rest)
        for key in maybe:
            kv, _ = await self._store(self.client.get(self.subnets_prefix + key))
            if kv is not None:
                listing.append(scan(kv))
        return listing

    @staticmethod
    def _may_be_mine(value: bytes, attrs: LeaseAttrs) -> bool:
        """False only for a stored value that cannot name our public IPv4 address: only those that may are
        decoded (10,000 leases took ~1 s to decode on every acquire). An IPv4 address has one text form,
        so a value naming ours holds that text, unless it is written with escapes."""
        if attrs.public_ip is None:
            return True  # IPv6 has many text forms: decode every lease
        return str(attrs.public_ip).encode() in value or b"\\" in value

    @staticmethod
    def _is_mine(lease: Lease, attrs: LeaseAttrs) -> bool:
        if attrs.public_ip is not None:
            return lease.attrs.public_ip == attrs.public_ip
        return attrs.public_ipv6 is not None and lease.attrs.public_ipv6 == attrs.public_ipv6

    async def _refresh(self, lease: Lease, attrs: LeaseAttrs, value: bytes) -> Lease | None:
        """Take over our existing lease with new attributes; None when it changed under us."""
        key = self.subnets_prefix + lease.key
        if lease.store_lease_id == 0:  # a reservation stays a reservation
            if not await self._store(self.client.replace(key, value, lease.mod_revision)):
                return None
            log.info("using reserved subnet %s", lease.key)
            return self._held(lease.key, lease.subnet, lease.ipv6_subnet, attrs, 0)
        lease_id = await self._store(self.client.grant(self.lease_ttl))
        if not await self._store(self.client.replace(key, value, lease.mod_revision, lease=lease_id)):
            await self._revoke_quietly(lease_id)
            return None
        await self._revoke_quietly(lease.store_lease_id)  # nothing is attached to it any more
        log.info("reusing our previous lease %s", lease.key)
        return self._held(lease.key, lease.subnet, lease.ipv6_subnet, attrs, lease_id)

    def _choose(
        self,
        config: NetworkConfig,
        taken: Iterable[str | Lease],
        previous: SubnetPair,
    ) -> SubnetPair:
        # (network address, prefix length) pairs: no network object is kept per taken subnet
        taken4: set[tuple[int, int]] = set()
        taken6: set[tuple[int, int]] = set()
        for item in taken:  # the store's keys (a lease stands for its key)
            key = item if isinstance(item, str) else item.key
            address, dash, length = key.partition("-")
            if dash and "&" not in key and length.isdigit() and len(length) <= 2 and length.isascii():
                # the common key, 10.244.3.0-24, read without a network object (10,000 at each acquire)
                # where parse_subnet_key would read the same; any other key is left to it
                try:
                    value = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
                except OSError:
                    value = -1
                prefix_len = int(length)
                if value >= 0 and 1 <= prefix_len <= 32 and not value & (0xFFFFFFFF >> prefix_len):
                    taken4.add((value, prefix_len))
                    continue
            try:
                sn4, sn6 = parse_subnet_key(key)
            except CorruptLease:
                continue
            if sn4 is not None:
                taken4.add((int(sn4.network_address), sn4.prefixlen))
            if sn6 is not None:
                taken6.add((int(sn6.network_address), sn6.prefixlen))
        subnet: IPv4Network | None = None
        ipv6: IPv6Network | None = None
        prev4, prev6 = previous
        if config.enable_ipv4:
            picked = self._pick(
                config.subnet_min, config.subnet_max, config.subnet_len, taken4, prev4, "IPv4"
            )
            assert isinstance(picked, IPv4Network)
            subnet = picked
        if config.enable_ipv6:
            picked = self._pick(
                config.ipv6_subnet_min, config.ipv6_subnet_max, config.ipv6_subnet_len, taken6, prev6, "IPv6"
            )
            assert isinstance(picked, IPv6Network)
            ipv6 = picked
        return subnet, ipv6

    @staticmethod
    def _pick(
        low: IPv4Address | IPv6Address | None,
        high: IPv4Address | IPv6Address | None,
        prefix_len: int,
        taken: Collection[tuple[int, int]],
        previous: IPv4Network | IPv6Network | None,
        family: str,
    ) -> IPv4Network | IPv6Network:
        """A random free subnet between ``low`` and ``high`` (``previous`` when it is free), in
        integer arithmetic: a /8 in /24s is 65,535 candidates. ``taken``: (network address, prefix
        length) of the subnets in the store. ``low`` and ``high`` are set for every family the config
        enables (netconfig fills them in)."""
        assert low is not None and high is not None
        size = 1 << (low.max_prefixlen - prefix_len)
        base, top = int(low), int(high)
        count = (top - base) // size + 1
        used = {
            (address - base) // size
            for address, length in taken
            if length == prefix_len and base <= address <= top
        }
        if (
            previous is not None
            and previous.prefixlen == prefix_len
            and base <= int(previous.network_address) <= top
            and (int(previous.network_address), previous.prefixlen) not in taken
        ):
            return previous
        free = count - len(used)
        if free <= 0:
            raise AcquireError(
                f"no free {family} subnet: all {count} /{prefix_len} subnets between {low} and {high} are taken"
            )
        if free * 4 >= count:  # at least a quarter free: a few random probes find one
            while True:
                index = random.randrange(count)
                if index not in used:
                    return subnet_at(low, index, prefix_len)
        return subnet_at(low, random.choice([i for i in range(count) if i not in used]), prefix_len)

    async def restore_lease(self, config: NetworkConfig, lease: Lease, attrs: LeaseAttrs) -> Lease:
        """Our value back at our key, unconditionally (another writer replaced it), bound to a fresh etcd
        lease; a reservation stays a reservation."""
        key = self.subnets_prefix + lease.key
        value = encode_attrs(attrs)
        if lease.store_lease_id == 0:
            await self._store(self.client.put(key, value))
            return self._held(lease.key, lease.subnet, lease.ipv6_subnet, attrs, 0)
        lease_id = await self._store(self.client.grant(self.lease_ttl))
        await self._store(self.client.put(key, value, lease=lease_id))
        await self._revoke_quietly(lease.store_lease_id)
        return self._held(lease.key, lease.subnet, lease.ipv6_subnet, attrs, lease_id)

    async def renew_lease(self, config: NetworkConfig, lease: Lease) -> Lease | None:
        if lease.store_lease_id == 0:
            return lease
        ttl = await self._store(self.client.keepalive_once(lease.store_lease_id))
        if ttl <= 0:
            return None
        kv, _ = await self._store(self.client.get(self.subnets_prefix + lease.key))
        if kv is None or kv.lease != lease.store_lease_id:
            return None
        return Lease(
            key=lease.key,
            subnet=lease.subnet,
            ipv6_subnet=lease.ipv6_subnet,
            attrs=lease.attrs,
            store_lease_id=lease.store_lease_id,
            expiration=self._expiry(ttl),
            mod_revision=kv.mod_revision,
        )

    # ---- watching ---------------------------------------------------------------------------

    async def run_watch(self, config: NetworkConfig, hub: LeaseSink) -> None:
        delay = 0.2
        while True:
            try:
                revision = await self._list_into(config, hub)
                hub.set_store(self.store_id)
                hub.reset({}, revision)
                delay = 0.2
                async for batch in self.client.watch_prefix(self.subnets_prefix, revision + 1):
                    if batch.progress:
                        hub.progress(batch.revision)
                        continue
                    changes: list[Change] = []
                    for event in batch.events:
                        key = event.kv.key[len(self.subnets_prefix) :]
                        if event.type == "delete":
                            self._reported.forget(event.kv.key)
                            changes.append((key, None))
                        else:  # a valid lease overwritten with garbage is gone for the watchers
                            changes.append((key, self._decode(config, event.kv)))
                    hub.apply(changes, batch.revision)
            except WatchCompacted as exc:
                log.warning(
                    "lease watch fell behind etcd compaction (revision %d); relisting", exc.compact_revision
                )
            except StoreUnavailable as exc:
                metrics.STORE_RECONNECTS.inc()
                log.warning("cannot list leases: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ---- helpers ----------------------------------------------------------------------------

    async def _store(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except EtcdUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc
        except EtcdError as exc:
            raise StoreUnavailable(f"etcd error: {exc}") from exc

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self.client.revoke(lease_id)
        except EtcdError as exc:
            log.info("could not revoke etcd lease %x (it will expire): %s", lease_id, exc)

    def _held(
        self,
        key: str,
        subnet: IPv4Network | None,
        ipv6: IPv6Network | None,
        attrs: LeaseAttrs,
        lease_id: int,
    ) -> Lease:
        """The lease we just wrote, bound to etcd lease ``lease_id`` (0: a reservation, which never expires)."""
        expiration = self._expiry(self.lease_ttl) if lease_id else None
        return Lease(key, subnet, ipv6, attrs, expiration=expiration, store_lease_id=lease_id)

    @staticmethod
    def _expiry(ttl: int) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=ttl)


__all__ = ["DEFAULT_LEASE_TTL", "DEFAULT_PREFIX", "EtcdSubnetManager"]
