"""What every subnet manager (store) offers, what it raises, and where it pushes leases.

A manager owns the node's own lease (acquire, renew, restore) and feeds a :class:`LeaseSink` (the lease
stream's hub) with every lease and every change: the store pushes, it is never pulled from by the hub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol, TypeVar

from lease_service.lease import Lease, LeaseAttrs, SubnetPair
from lease_service.netconfig import NetworkConfig

T = TypeVar("T")

Change = tuple[str, Lease | None]  #: (key, the lease now, or None when removed)


@dataclass(frozen=True)
class Known:
    """The leases as the lease stream holds them (key → the lease's UPSERT event in wire form: read without
    awaiting in between, it is the hub's live map). ``after``: the stream's first listing is still running
    and has listed every key up to this one; what sorts after it is not known yet."""

    leases: Mapping[str, bytes]
    after: str | None = None


class StoreUnavailable(Exception):
    """The store (etcd, the Kubernetes API) cannot be reached right now; retrying may help."""


class StateUnavailable(Exception):
    """The store cannot tell its state at an old revision (compacted, or not supported)."""


class AcquireError(Exception):
    """No lease can be had (network full, config changed under us, ...); the message says why."""


class AccessDenied(AcquireError):
    """The store refused us a permission; the message names it."""


class LeaseSink(Protocol):
    """Where a manager's watch pushes the store's leases, whole store revisions at a time."""

    def set_store(self, store_id: str) -> None:
        """The store's identity as of the latest list (called before each :meth:`reset`)."""
        ...

    def listed(self, key: str, lease: Lease) -> None:
        """One valid lease of a listing in progress, handed on as soon as it is decoded, so that the store
        never holds the whole listing: it is part of the next :meth:`reset`."""
        ...

    def discard_listed(self) -> None:
        """Forget the leases given to :meth:`listed` since the last :meth:`reset` (the listing starts over)."""
        ...

    def reset(self, leases: Mapping[str, Lease], revision: int) -> None:
        """Every valid lease, listed at ``revision``: ``leases`` and those given to :meth:`listed` since
        the last reset or :meth:`discard_listed`."""
        ...

    def apply(self, changes: Iterable[Change], revision: int) -> None:
        """The changes of whole store revisions, up to and including ``revision``."""
        ...

    def progress(self, revision: int) -> None:
        """Nothing changed up to ``revision``."""
        ...


class SubnetManager(Protocol):
    """Where leases live. Every method may raise :class:`StoreUnavailable`."""

    #: identifies the store in cursors: a cursor from another store is never resumed
    @property
    def store_id(self) -> str: ...

    async def get_network_config(self) -> NetworkConfig:
        """The validated network config; raises ``ConfigError`` when it is missing or invalid."""
        ...

    async def stored_public_ips(self) -> tuple[IPv4Address | None, IPv6Address | None]:
        """The public IPs the store holds for this node, which replace the flags (flannel's
        node-public-ip annotations in Kubernetes mode); (None, None) when the store keeps none."""
        ...

    async def acquire_lease(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous: SubnetPair,
        known: Known | None = None,
    ) -> Lease:
        """This node's lease: its existing one (same public IP), else ``previous``'s subnet when
        free, else a random free subnet. ``known``: the leases as the lease stream holds them, which a store
        may choose from instead of listing itself (and list only what sorts after ``known.after``)."""
        ...

    async def restore_lease(self, config: NetworkConfig, lease: Lease, attrs: LeaseAttrs) -> Lease:
        """Write ``lease`` with ``attrs`` back over a change another writer made to it."""
        ...

    async def renew_lease(self, config: NetworkConfig, lease: Lease) -> Lease | None:
        """Extend the lease; None when it no longer exists in the store."""
        ...

    async def state_at(
        self, config: NetworkConfig, revision: int, keep: Callable[[Lease], T]
    ) -> dict[str, T]:
        """Every valid lease as it was at ``revision``, by key, as ``keep`` makes of it as soon as it is decoded
        (the caller keeps what it needs: the hub, a lease's event in wire form); raises
        :class:`StateUnavailable` when the store cannot tell (compacted, or it keeps no history)."""
        ...

    async def run_watch(self, config: NetworkConfig, hub: LeaseSink) -> None:
        """Push every lease and every change into ``hub``, forever."""
        ...

    async def close(self) -> None: ...
