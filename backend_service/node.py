"""Facts about this node that the backends need: its own lease and its underlay.

Filled in by the session from the node's lease (``AcquireLease``/``WatchLease``), from the lease
service's external interface (:func:`backend_service.kernel.read.public_interface_from`) and from the
kernel (the connected networks come with every :func:`backend_service.kernel.read.read_kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network


@dataclass(frozen=True)
class ConnectedNetwork:
    """A network reachable without a gateway (a link-scope route), and the interface it is on."""

    network: IPv4Network | IPv6Network
    ifname: str


@dataclass(frozen=True)
class PublicInterface:
    """The external interface the lease service chose, and its own addresses (the VXLAN ``local``)."""

    ifname: str
    ifindex: int
    mtu: int
    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None


@dataclass(frozen=True)
class LocalNode:
    """This node: its subnets (from its own lease), public addresses and directly connected networks."""

    subnet: IPv4Network | None
    ipv6_subnet: IPv6Network | None
    public_ip: IPv4Address | None
    public_ipv6: IPv6Address | None
    connected: tuple[ConnectedNetwork, ...] = ()

    def connected_network(self, addr: IPv4Address | IPv6Address) -> ConnectedNetwork | None:
        """The most specific directly connected network holding ``addr``, if any."""
        best: ConnectedNetwork | None = None
        for c in self.connected:
            matches = c.network.version == addr.version and addr in c.network
            if matches and (best is None or c.network.prefixlen > best.network.prefixlen):
                best = c
        return best
