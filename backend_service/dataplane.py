"""One reconcile, top to bottom: leases → validation → desired state → kernel read → diff → apply.

:class:`Dataplane` is what the lease-stream glue calls with the full set of leases it holds
(after every applied message, or on a timer): it never raises for a bad lease or a refused
operation, it reports them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute

from proto.flannel.v1 import lease_pb2

from .backend import Backend
from .config import HOST_GW, VXLAN, ConfigError, NetworkConfig
from .desired import DesiredState, PeerPlan
from .diff import Op, diff
from .hostgw import HostGwBackend
from .kernel import Applier, ApplyResult, PyrouteApplier, read_kernel
from .node import LocalNode, PublicInterface
from .validate import Rejection, ValidationResult, validate_leases
from .vxlan import VxlanBackend

log = logging.getLogger(__name__)


def make_backend(ipr: AsyncIPRoute, config: NetworkConfig, public: PublicInterface) -> Backend:
    """The backend ``config.backend_type`` names."""
    if config.backend_type == VXLAN:
        return VxlanBackend(ipr, config, public)
    if config.backend_type == HOST_GW:
        return HostGwBackend(public)
    raise ConfigError("Backend.Type", config.backend_type, f"one of {VXLAN!r}, {HOST_GW!r}")


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconcile saw and did."""

    validation: ValidationResult
    desired: DesiredState
    ops: tuple[Op, ...]
    result: ApplyResult
    deletes_allowed: bool
    node: LocalNode | None = None
    """The node as reconciled, its directly connected networks read from the kernel."""

    @property
    def peers(self) -> tuple[PeerPlan, ...]:
        return self.desired.peers

    @property
    def rejected(self) -> tuple[Rejection, ...]:
        return self.validation.rejected

    @property
    def ok(self) -> bool:
        """True when every operation was applied (rejected leases do not count as failure)."""
        return self.result.ok


class Dataplane:
    """Keeps the kernel equal to the desired state of a backend, by diff."""

    def __init__(
        self, ipr: AsyncIPRoute, config: NetworkConfig, backend: Backend, *, applier: Applier | None = None
    ) -> None:
        self.ipr = ipr
        self.config = config
        self.backend = backend
        self.applier: Applier = applier if applier is not None else PyrouteApplier(ipr)

    async def reconcile(
        self, leases: Iterable[lease_pb2.Lease], node: LocalNode, *, synced: bool
    ) -> ReconcileReport:
        """Validate ``leases`` (every lease known, ours included), and make the kernel match.

        ``synced=False`` (before the lease stream's SYNCED): add and replace only, delete nothing.
        ``node.connected`` is filled from the kernel.
        """
        snapshot = await read_kernel(self.ipr, self.backend.devices)
        node = dataclasses.replace(node, connected=snapshot.connected)
        validation = validate_leases(leases, self.config, node)
        # Rejections are reported, not logged here: the caller logs each one once, not every reconcile.
        desired = self.backend.desired(validation.accepted, node)
        ops = diff(desired, snapshot.state, delete=synced)
        result = await self.applier.apply(ops)
        if ops:
            log.info(
                "reconciled %d peers: %d changes applied, %d failed%s",
                len(desired.peers),
                result.applied,
                len(result.failures),
                "" if synced else " (not synced yet: nothing deleted)",
            )
        return ReconcileReport(validation, desired, tuple(ops), result, synced, node)
