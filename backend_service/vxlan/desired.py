"""What the vxlan backend wants in the kernel per peer (pure).

Per peer: ``<subnet> via <subnet network address> dev flannel.<VNI> onlink``, neighbour
``<subnet network address> lladdr <VtepMAC> dev flannel.<VNI>`` (permanent) and FDB
``<VtepMAC> dev flannel.<VNI> dst <public IP> self permanent``. With DirectRouting, a peer whose
public IP is on our public interface's directly connected network gets instead
``<subnet> via <public IP> dev <public interface>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import VxlanOptions
from ..desired import (
    MODE_DIRECT,
    MODE_VXLAN,
    DesiredBuilder,
    DesiredState,
    FdbEntry,
    IPAddress,
    IPNetwork,
    Neighbour,
    PeerPlan,
    Route,
)
from ..leases import PeerLease, VxlanData
from ..node import LocalNode


def vxlan_desired(
    peers: Sequence[PeerLease],
    options: VxlanOptions,
    node: LocalNode,
    public_ifname: str,
    dev4: str | None,
    dev6: str | None,
) -> DesiredState:
    """Routes, neighbours and FDB entries for ``peers`` (pure)."""
    out = DesiredBuilder()
    for peer in peers:
        routes: list[Route] = []
        neighbours: list[Neighbour] = []
        fdb: list[FdbEntry] = []
        modes: set[str] = set()
        families: tuple[tuple[str | None, IPNetwork | None, IPAddress | None, VxlanData | None], ...] = (
            (dev4, peer.subnet, peer.public_ip, peer.vxlan),
            (dev6, peer.ipv6_subnet, peer.public_ipv6, peer.vxlan_v6),
        )
        for dev, subnet, public, data in families:
            if dev is None or subnet is None or public is None or data is None:
                continue
            if options.direct_routing:
                link = node.connected_network(public)
                if link is not None and link.ifname == public_ifname:
                    routes.append(Route(subnet, public, public_ifname))
                    modes.add(MODE_DIRECT)
                    continue
            gateway = subnet.network_address
            routes.append(Route(subnet, gateway, dev, onlink=True))
            neighbours.append(Neighbour(dev, gateway, data.vtep_mac))
            fdb.append(FdbEntry(dev, data.vtep_mac, public))
            modes.add(MODE_VXLAN)
        if modes:
            out.add(
                PeerPlan(peer, MODE_DIRECT if modes == {MODE_DIRECT} else MODE_VXLAN), routes, neighbours, fdb
            )
    return out.build()
