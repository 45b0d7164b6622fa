"""The one interface every backend implements (vxlan, host-gw, ...), and a factory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .desired import DesiredState
from .leases import PeerLease
from .node import LocalNode


@dataclass(frozen=True)
class BackendSetup:
    """What a backend publishes once its devices exist: the lease's backend data and the pod MTU."""

    backend_type: str
    backend_data: str
    """JSON text for ``AcquireLease.backend_data``; empty for none."""
    backend_v6_data: str
    mtu: int
    """The MTU pods should use (``FLANNEL_MTU``)."""
    device: str
    """The overlay device (``flannel.1``); empty when there is none (host-gw)."""


class Backend(Protocol):
    """A dataplane backend: sets up its devices and turns accepted peers into desired state.

    ``setup`` and ``configure`` touch the kernel and are idempotent (safe to call after a
    restart: existing devices are reused); ``desired`` is pure.
    """

    backend_type: str

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices whose routes, neighbours and FDB entries this backend owns."""
        ...

    async def setup(self) -> BackendSetup:
        """Create or reuse the backend's devices; before the node's lease is acquired."""
        ...

    async def configure(self, node: LocalNode) -> None:
        """Apply the node's own lease to the devices (addresses); after every (re)acquisition."""
        ...

    async def repair(self, node: LocalNode | None) -> list[str]:
        """Restore the backend's devices after someone deleted or changed them (the device watcher
        calls it); what was repaired, empty when nothing was wrong."""
        ...

    def desired(self, peers: Sequence[PeerLease], node: LocalNode) -> DesiredState:
        """The kernel objects that reach ``peers`` (already validated)."""
        ...
