"""The one protocol every subnet manager implements."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

from lease_service.lease import Lease, LeaseAttrs
from lease_service.netconfig import NetworkConfig
from lease_service.stream import LeaseHub


class StoreUnavailable(Exception):
    """The store (etcd, the Kubernetes API) cannot be reached right now; retrying may help."""


class AcquireError(Exception):
    """No lease can be had (network full, config changed under us, ...); the message says why."""


class AccessDenied(AcquireError):
    """The store refused us a permission; the message names it."""


class SubnetManager(Protocol):
    """Where leases live. Every method may raise :class:`StoreUnavailable`."""

    #: identifies the store in cursors: a cursor from another store is never resumed
    store_id: str

    async def get_network_config(self) -> NetworkConfig:
        """The validated network config; raises ``ConfigError`` when it is missing or invalid."""
        ...

    async def acquire_lease(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous: tuple[IPv4Network | None, IPv6Network | None],
    ) -> Lease:
        """This node's lease: its existing one (same public IP), else ``previous``'s subnet when
        free, else a random free subnet."""
        ...

    async def restore_lease(self, config: NetworkConfig, lease: Lease, attrs: LeaseAttrs) -> Lease:
        """Write ``lease`` with ``attrs`` back over a change another writer made to it."""
        ...

    async def renew_lease(self, config: NetworkConfig, lease: Lease) -> Lease | None:
        """Extend the lease; None when it no longer exists in the store."""
        ...

    async def run_watch(self, config: NetworkConfig, hub: LeaseHub) -> None:
        """Feed ``hub`` with every lease and every change, forever."""
        ...

    async def close(self) -> None: ...
