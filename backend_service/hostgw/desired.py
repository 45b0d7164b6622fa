"""What the host-gw backend wants in the kernel per peer (pure).

``<peer subnet> via <peer public IP> dev <interface that reaches it> proto 70``: only for a peer on a
directly connected network (validation rejects the others with ``NOT_DIRECTLY_CONNECTED``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..desired import MODE_HOST_GW, DesiredBuilder, DesiredState, PeerPlan, Route
from ..leases import PeerLease
from ..node import LocalNode

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
