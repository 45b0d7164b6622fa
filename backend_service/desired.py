"""Desired dataplane state: the routes, neighbours and FDB entries the peers need.

Pure values, computed by a backend (:mod:`backend_service.vxlan.desired`, :mod:`backend_service.hostgw.desired`)
from the accepted peer leases; :mod:`backend_service.kernel.diff` compares them with the kernel.

Ownership: every route we create carries the route protocol :data:`RTPROT_FLANNEL`; routes,
permanent neighbours and permanent FDB entries on our VXLAN devices are ours as well.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from .leases import PeerLease

RTPROT_FLANNEL = 70
"""Route protocol of every route flannel-py creates (0x46, ASCII "F").

Not in iproute2's ``rt_protos`` (kernel 2, boot 3, static 4, ..., babel 42, openr 99, bgp 186 ...)
nor used by Calico (80) or BIRD (12); ``ip route show proto 70`` lists exactly our routes.
Go flannel uses ``boot`` (3); routes on ``flannel.<VNI>`` are ours whatever their protocol, so a
takeover from Go flannel rewrites them in place.
"""

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

MODE_VXLAN = "vxlan"
MODE_DIRECT = "direct"
MODE_HOST_GW = "host-gw"
MODE_WIREGUARD = "wireguard"


@dataclass(frozen=True, slots=True)
class Route:
    """``<dst> via <gateway> dev <ifname> [onlink] proto RTPROT_FLANNEL`` in the main table."""

    dst: IPNetwork
    gateway: IPAddress | None
    """None only for routes read from the kernel that have no single gateway (ours never)."""
    ifname: str
    onlink: bool = False

    def __str__(self) -> str:
        via = f" via {self.gateway}" if self.gateway is not None else ""
        return f"route {self.dst}{via} dev {self.ifname}{' onlink' if self.onlink else ''}"


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A permanent neighbour: ``<dst> lladdr <lladdr> dev <ifname> nud permanent``."""

    ifname: str
    dst: IPAddress
    lladdr: str

    def __str__(self) -> str:
        return f"neigh {self.dst} lladdr {self.lladdr} dev {self.ifname}"


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A VXLAN FDB entry: ``<lladdr> dev <ifname> dst <dst> self permanent``."""

    ifname: str
    lladdr: str
    dst: IPAddress

    def __str__(self) -> str:
        return f"fdb {self.lladdr} dev {self.ifname} dst {self.dst}"


@dataclass(frozen=True, slots=True)
class WgPeer:
    """A WireGuard peer on one of our WireGuard devices: its key, endpoint, allowed IPs, keepalive, PSK."""

    ifname: str
    public_key: str
    endpoint: tuple[IPAddress, int] | None
    allowed_ips: tuple[IPNetwork, ...]
    """Sorted (version, address, prefix length), so that equal sets compare equal."""
    keepalive: int = 0
    psk: str | None = field(default=None, repr=False)

    @property
    def endpoint_text(self) -> str:
        if self.endpoint is None:
            return ""
        addr, port = self.endpoint
        return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"

    def __str__(self) -> str:
        allowed = ",".join(str(n) for n in self.allowed_ips)
        return f"wg peer {self.public_key} dev {self.ifname} endpoint {self.endpoint_text or '-'} allowed-ips {allowed}"


def sorted_networks(networks: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """``networks`` in the order WgPeer keeps them."""
    return tuple(sorted(set(networks), key=lambda n: (n.version, int(n.network_address), n.prefixlen)))


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """How a peer is reached: ``vxlan`` (encapsulated), ``direct`` (DirectRouting) or ``host-gw``,
    and the kernel objects that reach it."""

    peer: PeerLease
    mode: str
    objects: tuple[Route | Neighbour | FdbEntry | WgPeer, ...] = ()
    """This peer's WireGuard peers, FDB entries, neighbours and routes (filled in by :class:`DesiredBuilder`)."""


@dataclass(frozen=True)
class DesiredState:
    """Everything the kernel should hold for the peers, and how each peer is reached."""

    routes: frozenset[Route] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()
    fdb: frozenset[FdbEntry] = frozenset()
    peers: tuple[PeerPlan, ...] = ()
    wg_peers: frozenset[WgPeer] = frozenset()


class DesiredBuilder:
    """Collects objects peer by peer; :meth:`build` freezes them."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.neighbours: list[Neighbour] = []
        self.fdb: list[FdbEntry] = []
        self.wg_peers: list[WgPeer] = []
        self.peers: list[PeerPlan] = []

    def add(
        self,
        plan: PeerPlan,
        routes: Iterable[Route] = (),
        neighbours: Iterable[Neighbour] = (),
        fdb: Iterable[FdbEntry] = (),
        wg_peers: Iterable[WgPeer] = (),
    ) -> None:
        """Add one peer's objects."""
        routes, neighbours, fdb, wg = tuple(routes), tuple(neighbours), tuple(fdb), tuple(wg_peers)
        self.peers.append(PeerPlan(plan.peer, plan.mode, (*wg, *fdb, *neighbours, *routes)))
        self.routes.extend(routes)
        self.neighbours.extend(neighbours)
        self.fdb.extend(fdb)
        self.wg_peers.extend(wg)

    def keep(
        self, plan: PeerPlan, objects: Iterable[Route | Neighbour | FdbEntry | WgPeer] | None = None
    ) -> None:
        """Add one peer's plan as it is (its objects already made); ``objects``: only these of them."""
        self.peers.append(plan)
        for obj in plan.objects if objects is None else objects:
            if isinstance(obj, Route):
                self.routes.append(obj)
            elif isinstance(obj, Neighbour):
                self.neighbours.append(obj)
            elif isinstance(obj, FdbEntry):
                self.fdb.append(obj)
            else:
                self.wg_peers.append(obj)

    def build(self) -> DesiredState:
        """The frozen state."""
        return DesiredState(
            frozenset(self.routes),
            frozenset(self.neighbours),
            frozenset(self.fdb),
            tuple(self.peers),
            frozenset(self.wg_peers),
        )
