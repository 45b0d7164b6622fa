"""The host-gw backend: a plain route to each peer's subnet via the peer's public IP.

``<peer subnet> via <peer public IP> dev <interface that reaches it> proto 70``; it needs every
peer on a directly connected network (validation rejects the others with
``NOT_DIRECTLY_CONNECTED``). No device, no encapsulation, no backend data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .backend import BackendSetup
from .config import HOST_GW
from .desired import MODE_HOST_GW, DesiredBuilder, DesiredState, PeerPlan, Route
from .leases import PeerLease
from .node import LocalNode, PublicInterface

log = logging.getLogger(__name__)


def hostgw_desired(peers: Sequence[PeerLease], node: LocalNode) -> DesiredState:
    """Routes for ``peers``; a peer whose public IP is not directly connected gets none."""
    out = DesiredBuilder()
    for peer in peers:
        routes = []
        for subnet, public in ((peer.subnet, peer.public_ip), (peer.ipv6_subnet, peer.public_ipv6)):
            if subnet is None or public is None:
                continue
            link = node.connected_network(public)
            if link is None:
                log.warning(
                    "host-gw: peer %s public IP %s is not directly connected; skipped", peer.name, public
                )
                continue
            routes.append(Route(subnet, public, link.ifname))
        if routes:
            out.add(PeerPlan(peer, MODE_HOST_GW), routes)
    return out.build()


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
