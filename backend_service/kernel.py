"""The kernel side: read the state we own, and apply operations, with pyroute2's ``AsyncIPRoute``.

Reading: :func:`read_kernel` dumps links, main-table routes, and the neighbour and FDB tables
of our devices once, and returns what we own (see :mod:`backend_service.desired` for the
ownership rule) plus the directly connected networks (link-scope routes without a gateway,
which host-gw and DirectRouting need).

Applying: :class:`Applier` is a one-method interface (``apply(ops)``); :class:`TemplateApplier`
sends pyroute2-encoded templates, many per ``sendmsg`` (about 10x faster than one pyroute2
request per op). A failing operation is recorded and the others still run.

:class:`Kernel` is what the reconciler needs of the kernel (read what we own, apply ops);
:class:`NetlinkKernel` is the real one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from socket import AF_INET, AF_INET6
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute

from .desired import RTPROT_FLANNEL, FdbEntry, Neighbour, Route, WgPeer
from .diff import DELETE, KernelRoute, KernelState, Op
from .netlink_fast import (
    AF_BRIDGE,
    CHUNK,
    NUD_PERMANENT,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTNH_F_ONLINK,
    MessageEncoder,
    RawRoute,
    dump_neighbours,
    dump_routes,
    ip_from,
    mac_from,
    open_netlink_socket,
    send_batch,
)
from .node import ConnectedNetwork, PublicInterface
from .wireguard import wgctl

log = logging.getLogger(__name__)

RTPROT_KERNEL = 2
RT_SCOPE_LINK = 253


class KernelError(RuntimeError):
    """A kernel operation or lookup failed; the message says which object and why."""


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


async def link_names(ipr: AsyncIPRoute) -> dict[int, str]:
    """ifindex → ifname for every link."""
    return {link["index"]: _attr(link, "IFLA_IFNAME") async for link in await ipr.link("dump")}


async def link_index(ipr: AsyncIPRoute, ifname: str) -> int | None:
    """The index of ``ifname``, or None."""
    found = await ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


@dataclass(frozen=True)
class KernelSnapshot:
    """One read of the kernel: what we own, the connected networks, and the link names."""

    state: KernelState
    connected: tuple[ConnectedNetwork, ...]
    links: dict[int, str] = field(compare=False)


async def read_kernel(ipr: AsyncIPRoute, devices: Iterable[str] = ()) -> KernelSnapshot:
    """Read the routes, neighbours and FDB entries we own, and the directly connected networks.

    Ours: main-table routes with protocol RTPROT_FLANNEL, and non-kernel routes, permanent
    neighbours and permanent FDB entries on ``devices`` (our VXLAN devices).

    The route, neighbour and FDB dumps go over a raw socket in ``ipr``'s namespace and only the
    fields needed are parsed (:mod:`backend_service.netlink_fast`), in a worker thread.
    """
    links = await link_names(ipr)
    sock = open_netlink_socket(ipr)  # in the loop thread: pyroute2 sockets are per thread
    try:
        return await asyncio.to_thread(_read_dumps, sock, links, set(devices))
    finally:
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


def _read_dumps(sock: socket.socket, links: dict[int, str], devices: set[str]) -> KernelSnapshot:
    device_index = {idx for idx, name in links.items() if name in devices}
    routes: list[KernelRoute] = []
    connected: list[ConnectedNetwork] = []
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
                routes.append(KernelRoute(_route_of(r, ifname), proto=r.proto, priority=r.priority))
            elif r.scope == RT_SCOPE_LINK and not r.multipath and links.get(oif) not in (None, "lo"):  # type: ignore[arg-type]
                connected.append(ConnectedNetwork(_route_of(r, ifname).dst, ifname))
    neighbours: set[Neighbour] = set()
    fdb: set[FdbEntry] = set()
    if device_index:
        for n in dump_neighbours(sock, 0, seq=100):  # AF_UNSPEC: the ARP and ND tables
            if (
                n.ifindex in device_index
                and n.state & NUD_PERMANENT
                and n.family in (AF_INET, AF_INET6)
                and n.dst
                and n.lladdr
            ):
                neighbours.add(Neighbour(links[n.ifindex], ip_from(n.dst), mac_from(n.lladdr)))
        for n in dump_neighbours(sock, AF_BRIDGE, seq=101):
            if n.ifindex in device_index and n.state & NUD_PERMANENT and n.dst and n.lladdr:
                fdb.add(FdbEntry(links[n.ifindex], mac_from(n.lladdr), ip_from(n.dst)))
    if len(_networks) > 2 * (len(routes) + len(connected)) + 1024:
        _networks.clear()
    state = KernelState(tuple(routes), frozenset(neighbours), frozenset(fdb))
    return KernelSnapshot(state, tuple(connected), links)


def public_interface_from(msg: Any) -> PublicInterface:
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


# --- applying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpFailure:
    """An operation the kernel refused."""

    op: Op
    error: str

    def __str__(self) -> str:
        return f"{self.op}: {self.error}"


@dataclass(frozen=True)
class ApplyResult:
    """How many operations were applied and which failed."""

    applied: int = 0
    failures: tuple[OpFailure, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


class Applier(Protocol):
    """Carries out kernel operations; must try every op even when some fail."""

    async def apply(self, ops: Sequence[Op]) -> ApplyResult: ...


class TemplateApplier:
    """Applies ops as pyroute2-encoded message templates, ``chunk`` per ``sendmsg``, ACKs read after.

    Netlink *replace* (create or replace) for every write; a delete of something already gone
    counts as done. Without pyroute2's per-request encoding cost; see :mod:`backend_service.netlink_fast`. The kernel carries out one socket's messages
    in order, so the phase order of ``ops`` (FDB, neighbours, then routes) is kept without waiting
    between phases. The sending runs in a worker thread; the event loop stays free.
    """

    def __init__(self, ipr: AsyncIPRoute, *, chunk: int = CHUNK) -> None:
        self._ipr = ipr
        self._chunk = chunk
        self._encoder = MessageEncoder()
        self._index: dict[str, int] = {}
        self._seq = 0

    async def _ifindex(self, ifname: str) -> int:
        idx = self._index.get(ifname)
        if idx is None:
            found = await link_index(self._ipr, ifname)
            if found is None:
                raise KernelError(f"device {ifname!r} does not exist")
            idx = self._index[ifname] = found
        return idx

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        self._index.clear()
        failed: dict[int, OpFailure] = {}
        messages: list[tuple[int, bytes]] = []
        by_seq: dict[int, int] = {}
        for n, op in enumerate(ops):
            try:
                idx = await self._ifindex(op.obj.ifname) if op.obj.ifname else 0
                self._seq = self._seq % 0x7FFFFFFF + 1
                messages.append((self._seq, self._encoder.encode(op, self._seq, idx)))
                by_seq[self._seq] = n
            except (KernelError, ValueError) as e:
                failed[n] = OpFailure(op, f"{type(e).__name__}: {e}")
        if messages:
            sock = open_netlink_socket(self._ipr)
            try:
                errors = await asyncio.to_thread(send_batch, sock, messages, self._chunk)
            finally:
                sock.close()
            for seq, code in errors.items():
                n = by_seq[seq]
                op = ops[n]
                if op.action == DELETE and code in (errno.ENOENT, errno.ESRCH):
                    continue
                failed[n] = OpFailure(
                    op, f"netlink error {code} ({errno.errorcode.get(code, '?')}): {os.strerror(code)}"
                )
        failures = [failed[n] for n in sorted(failed)]
        for f in failures:
            log.warning("kernel refused %s", f)
        return ApplyResult(applied=len(ops) - len(failures), failures=tuple(failures))


# Errors from `ip`/`bridge` that mean "already gone" when deleting.


class Kernel(Protocol):
    """The kernel as the reconciler sees it: read what we own, apply ops."""

    async def read(self, devices: Iterable[str]) -> KernelSnapshot:
        """What we own on (and through) ``devices``, the connected networks, the link names."""
        ...

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Carry out ``ops`` in order; every op is tried even when some fail."""
        ...


class NetlinkKernel:
    """The kernel of ``ipr``'s network namespace: :func:`read_kernel` and a :class:`TemplateApplier`, and
    the peers of our WireGuard devices through ``wg`` (:mod:`backend_service.wireguard.wgctl`)."""

    def __init__(self, ipr: AsyncIPRoute) -> None:
        self._ipr = ipr
        self._applier = TemplateApplier(ipr)

    async def read(self, devices: Iterable[str]) -> KernelSnapshot:
        devices = tuple(devices)
        snapshot = await read_kernel(self._ipr, devices)
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
        return dataclasses.replace(
            snapshot, state=dataclasses.replace(snapshot.state, wg_peers=frozenset(peers))
        )

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """WireGuard peers first (one ``wg set`` per device), netlink ops, then WireGuard removals: the
        order :func:`~backend_service.diff.diff` gives, with each kind applied in bulk."""
        wg_first = [op for op in ops if isinstance(op.obj, WgPeer) and op.action != DELETE]
        wg_last = [op for op in ops if isinstance(op.obj, WgPeer) and op.action == DELETE]
        netlink = [op for op in ops if not isinstance(op.obj, WgPeer)]
        failures: list[OpFailure] = []
        failures += await _apply_wg(wg_first)
        result = await self._applier.apply(netlink) if netlink else ApplyResult(0, ())
        failures += result.failures
        failures += await _apply_wg(wg_last)
        return ApplyResult(applied=len(ops) - len(failures), failures=tuple(failures))


async def _apply_wg(ops: Sequence[Op]) -> list[OpFailure]:
    """One ``wg set`` per device for ``ops``; when it fails, every op in it failed."""
    by_device: dict[str, list[Op]] = {}
    for op in ops:
        by_device.setdefault(op.obj.ifname, []).append(op)
    failures: list[OpFailure] = []
    for device, device_ops in by_device.items():
        upserts = [op.obj for op in device_ops if op.action != DELETE and isinstance(op.obj, WgPeer)]
        removes = [
            op.obj.public_key for op in device_ops if op.action == DELETE and isinstance(op.obj, WgPeer)
        ]
        try:
            await wgctl.set_peers(device, upserts, removes)
        except wgctl.WgError as e:
            failures += [OpFailure(op, str(e)) for op in device_ops]
            log.warning("WireGuard device %s refused %d peer changes: %s", device, len(device_ops), e)
    return failures
