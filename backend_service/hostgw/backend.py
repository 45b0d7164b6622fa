"""The host-gw backend: a plain route to each peer's subnet via the peer's public IP (:mod:`.desired`).

No device, no encapsulation, no backend data.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..backend import BackendSetup
from ..config import HOST_GW
from ..desired import DesiredState
from ..leases import PeerLease
from ..node import LocalNode, PublicInterface
from .desired import hostgw_desired


class HostGwBackend:
    """host-gw: no device of its own; routes carry RTPROT_FLANNEL so that they are known as ours."""

    backend_type = HOST_GW

    def __init__(self, public: PublicInterface) -> None:
        self.public = public

    @property
    def devices(self) -> tuple[str, ...]:
        return ()

    async def setup(self) -> BackendSetup:
        return BackendSetup(HOST_GW, "", "", self.public.mtu, "")

    async def configure(self, node: LocalNode) -> None:
        return None

    async def repair(self, node: LocalNode | None) -> list[str]:
        return []  # no device of its own

    def desired(self, peers: Sequence[PeerLease], node: LocalNode) -> DesiredState:
        return hostgw_desired(peers, node)
