"""Read the state we own from the kernel, with raw netlink dumps; and check the public interface.

:func:`read_kernel` dumps links, main-table routes, and the neighbour and FDB tables of our devices
once, and returns what we own (see :mod:`backend_service.desired` for the ownership rule) plus the
directly connected networks (link-scope routes without a gateway, which host-gw and DirectRouting
need). :func:`read_owned` adds the peers of our WireGuard devices (through ``wg``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from socket import AF_INET, AF_INET6
from typing import TypeVar

from pyroute2.iproute.linux import AsyncIPRoute

from proto.flannel.v1 import lease_pb2

from ..desired import RTPROT_FLANNEL, FdbEntry, Neighbour, Route, WgPeer
from ..node import ConnectedNetwork, PublicInterface
from . import wgctl
from .links import link_names
from .model import (
    Digest,
    Expected,
    KernelCheck,
    KernelError,
    KernelRoute,
    KernelSnapshot,
    KernelState,
    fdb_identity,
    fdb_print,
    neighbour_identity,
    neighbour_print,
    route_identity,
    route_print,
)
from .netlink_fast import (
    AF_BRIDGE,
    NUD_PERMANENT,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTNH_F_ONLINK,
    RawNeighbour,
    RawRoute,
    dump_neighbours,
    dump_routes,
    ip_from,
    mac_from,
    open_netlink_socket,
)

RTPROT_KERNEL = 2
RT_SCOPE_LINK = 253

_ROUTE, _CONNECTED, _NEIGHBOUR, _FDB = "route", "connected", "neighbour", "fdb"
_Owned = tuple[str, RawRoute | RawNeighbour, str]
"""What :func:`_scan` yields: the kind, the raw entry, the interface name."""


async def read_kernel(
    ipr: AsyncIPRoute, devices: Iterable[str] = (), expect: Expected | None = None
) -> KernelSnapshot:
    """Read the routes, neighbours and FDB entries we own, and the directly connected networks.

    Ours: main-table routes with protocol RTPROT_FLANNEL, and non-kernel routes, permanent
    neighbours and permanent FDB entries on ``devices`` (our VXLAN devices).

    The route, neighbour and FDB dumps go over a raw socket in ``ipr``'s namespace and only the
    fields needed are parsed (:mod:`backend_service.kernel.netlink_fast`), in a worker thread. With
    ``expect``, an entry that is exactly what the plan expects is only marked found in it (no object).
    """
    links = await link_names(ipr)
    sock = open_netlink_socket(ipr)  # in the loop thread: pyroute2 sockets are per thread
    return await _dumped(sock, lambda: _read_dumps(sock, links, set(devices), expect))


_T = TypeVar("_T")
_DUMPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-read")
"""The thread the dumps run in (one at a time, as the kernel serves a socket's dumps anyway)."""


async def _dumped(sock: socket.socket, dump: Callable[[], _T]) -> _T:
    """``dump()`` in the dump thread, which closes ``sock`` when it is done. Closed here instead, after a
    cancellation, the socket would go while the thread still reads it, and its descriptor number could be
    handed to another file under the thread's reads."""

    def run() -> _T:
        try:
            return dump()
        finally:
            sock.close()

    job = _DUMPER.submit(run)
    try:
        return await asyncio.wrap_future(job)
    finally:
        if job.cancel():  # cancelled before the thread took it up: it never will, so nothing closed it
            sock.close()


# Destination networks by their raw bytes: building an ip_network is most of the cost of turning
# a dump into values (3.5 us each), and a reconcile re-reads thousands of unchanged routes. Only
# the networks are kept between reads (about 250 bytes a route), not whole objects. Bounded:
# emptied when it grows well past what one read returns.
_networks: dict[tuple[bytes, int], ipaddress.IPv4Network | ipaddress.IPv6Network] = {}


def _route_of(r: RawRoute, ifname: str) -> Route:
    key = (r.dst, r.dst_len)
    dst = _networks.get(key)
    if dst is None:
        dst_ip = ip_from(r.dst)
        if dst_ip.version == 4:
            dst = ipaddress.IPv4Network((dst_ip, r.dst_len), strict=False)
        else:
            dst = ipaddress.IPv6Network((dst_ip, r.dst_len), strict=False)
        _networks[key] = dst
    return Route(
        dst=dst,
        gateway=ip_from(r.gateway) if r.gateway else None,
        ifname=ifname,
        onlink=bool(r.flags & RTNH_F_ONLINK),
    )


def _scan(sock: socket.socket, links: dict[int, str], devices: set[str]) -> Iterator[_Owned]:
    """What we own, and the connected networks, as the dumps arrive (the ownership rule's one home)."""
    device_index = {idx for idx, name in links.items() if name in devices}
    for family in (AF_INET, AF_INET6):
        for r in dump_routes(sock, family, seq=family):
            if r.table != RT_TABLE_MAIN or r.type != RTN_UNICAST or not r.dst or r.dst_len == 0:
                continue
            oif = r.oif
            owned = r.proto == RTPROT_FLANNEL or (oif in device_index and r.proto != RTPROT_KERNEL)
            if not owned and (r.gateway is not None or oif is None or oif in device_index):
                continue
            ifname = links.get(oif, f"if{oif}") if oif is not None else ""
            if owned:
                yield _ROUTE, r, ifname
            elif (
                oif is not None
                and r.scope == RT_SCOPE_LINK
                and not r.multipath
                and links.get(oif) not in (None, "lo")
            ):
                yield _CONNECTED, r, ifname
    if device_index:
        for n in dump_neighbours(sock, 0, seq=100):  # AF_UNSPEC: the ARP and ND tables
            if (
                n.ifindex in device_index
                and n.state & NUD_PERMANENT
                and n.family in (AF_INET, AF_INET6)
                and n.dst
                and n.lladdr
            ):
                yield _NEIGHBOUR, n, links[n.ifindex]
        for n in dump_neighbours(sock, AF_BRIDGE, seq=101):
            if n.ifindex in device_index and n.state & NUD_PERMANENT and n.dst and n.lladdr:
                yield _FDB, n, links[n.ifindex]


def _read_dumps(
    sock: socket.socket, links: dict[int, str], devices: set[str], expect: Expected | None = None
) -> KernelSnapshot:
    routes: list[KernelRoute] = []
    connected: list[ConnectedNetwork] = []
    neighbours: set[Neighbour] = set()
    fdb: set[FdbEntry] = set()
    build = expect is None or expect.deletes  # a plan that deletes nothing needs no object of the kernel's
    for kind, raw, ifname in _scan(sock, links, devices):
        if isinstance(raw, RawRoute):
            if kind == _ROUTE:
                if expect is not None:
                    expect.held(route_identity(raw.dst, raw.dst_len))
                    onlink = bool(raw.flags & RTNH_F_ONLINK)
                    fp = route_print(
                        raw.dst, raw.dst_len, raw.gateway, ifname, onlink, raw.proto, raw.priority
                    )
                    if expect.seen(fp) or not build:
                        continue
                routes.append(KernelRoute(_route_of(raw, ifname), proto=raw.proto, priority=raw.priority))
            else:
                connected.append(ConnectedNetwork(_route_of(raw, ifname).dst, ifname))
        elif raw.dst is not None and raw.lladdr is not None:
            mac = mac_from(raw.lladdr)
            if kind == _NEIGHBOUR:
                if expect is not None:
                    expect.held(neighbour_identity(ifname, raw.dst))
                    if expect.seen(neighbour_print(ifname, raw.dst, mac)) or not build:
                        continue
                neighbours.add(Neighbour(ifname, ip_from(raw.dst), mac))
            else:
                if expect is not None:
                    expect.held(fdb_identity(ifname, mac))
                    if expect.seen(fdb_print(ifname, mac, raw.dst)) or not build:
                        continue
                fdb.add(FdbEntry(ifname, mac, ip_from(raw.dst)))
    if len(_networks) > 2 * (len(routes) + len(connected)) + 1024:
        _networks.clear()
    state = KernelState(tuple(routes), frozenset(neighbours), frozenset(fdb))
    return KernelSnapshot(state, tuple(connected), links)


def _check_dumps(sock: socket.socket, links: dict[int, str], devices: set[str]) -> KernelCheck:
    owned = Digest()
    connected: list[ConnectedNetwork] = []
    for kind, raw, ifname in _scan(sock, links, devices):
        if isinstance(raw, RawRoute):
            if kind == _ROUTE:
                onlink = bool(raw.flags & RTNH_F_ONLINK)
                owned.add(
                    route_print(raw.dst, raw.dst_len, raw.gateway, ifname, onlink, raw.proto, raw.priority)
                )
            else:
                connected.append(ConnectedNetwork(_route_of(raw, ifname).dst, ifname))
        elif raw.dst is not None and raw.lladdr is not None:
            if kind == _NEIGHBOUR:
                owned.add(neighbour_print(ifname, raw.dst, mac_from(raw.lladdr)))
            else:
                owned.add(fdb_print(ifname, mac_from(raw.lladdr), raw.dst))
    return KernelCheck(owned, tuple(connected), links)


async def check_kernel(ipr: AsyncIPRoute, devices: Iterable[str] = ()) -> KernelCheck:
    """What :func:`read_kernel` would find, as a :class:`~backend_service.kernel.model.Digest` of
    fingerprints: the same dumps, but no object is built per entry and none is kept."""
    links = await link_names(ipr)
    sock = open_netlink_socket(ipr)
    return await _dumped(sock, lambda: _check_dumps(sock, links, set(devices)))


async def read_owned(
    ipr: AsyncIPRoute, devices: Iterable[str], expect: Expected | None = None
) -> KernelSnapshot:
    """:func:`read_kernel`, and the peers of those of ``devices`` that are our WireGuard devices (always as
    objects: they have no fingerprint)."""
    devices = tuple(devices)
    snapshot = await read_kernel(ipr, devices, expect)
    present = set(snapshot.links.values())
    wg_devices = [d for d in devices if d in wgctl.DEVICES and d in present]
    if not wg_devices:
        return snapshot
    peers: set[WgPeer] = set()
    for device in wg_devices:
        try:
            state = await wgctl.show(device)
        except wgctl.WgError as e:
            raise KernelError(str(e)) from e
        peers.update(p.peer for p in state.peers.values())
    return dataclasses.replace(snapshot, state=dataclasses.replace(snapshot.state, wg_peers=frozenset(peers)))


def public_interface_from(msg: lease_pb2.ExternalInterface) -> PublicInterface:
    """The lease service's ``ExternalInterface`` message as a :class:`PublicInterface` (parsed once, here).

    The backend never chooses an interface itself: the lease service chose this one and published its
    addresses, so the VXLAN device's ``dev``/``local`` and the lease's public IP are one decision.
    """
    if not msg.name or msg.index <= 0:
        raise KernelError(
            "the lease service sent no external interface (GetNetworkConfigResponse."
            "external_interface is empty): it must speak flannel.v1 with ExternalInterface"
        )
    try:
        ipv4 = ipaddress.IPv4Address(msg.iface_ipv4) if msg.iface_ipv4 else None
        ipv6 = ipaddress.IPv6Address(msg.iface_ipv6) if msg.iface_ipv6 else None
    except ValueError as exc:
        raise KernelError(f"external interface {msg.name!r}: bad address: {exc}") from exc
    return PublicInterface(ifname=msg.name, ifindex=msg.index, mtu=msg.mtu, ipv4=ipv4, ipv6=ipv6)


async def check_public_interface(ipr: AsyncIPRoute, public: PublicInterface) -> None:
    """Refuse an interface this process does not see as the lease service described it: the two daemons
    would then be in different network namespaces, or the interface was replaced meanwhile."""
    links = await link_names(ipr)
    seen = links.get(public.ifindex)
    if seen != public.ifname:
        where = f"is {seen!r}" if seen else "does not exist"
        raise KernelError(
            f"the lease service chose interface {public.ifname!r} (index {public.ifindex}) but "
            f"index {public.ifindex} {where} here: the lease service and the backend must run in "
            "the same network namespace"
        )
