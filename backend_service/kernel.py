"""The kernel side: read the state we own, and apply operations, with pyroute2's ``AsyncIPRoute``.

Reading: :func:`read_kernel` dumps links, main-table routes, and the neighbour and FDB tables
of our devices once, and returns what we own (see :mod:`backend_service.desired` for the
ownership rule) plus the directly connected networks (link-scope routes without a gateway,
which host-gw and DirectRouting need).

Applying: :class:`Applier` is a one-method interface (``apply(ops)``); :class:`PyrouteApplier`
encodes one request at a time through pyroute2; :class:`TemplateApplier` (the daemon's choice)
sends pyroute2-encoded templates, many per ``sendmsg``, about 10x faster for bulk changes;
:class:`IpBatchApplier` runs ``ip``/``bridge -batch``. A failing operation is recorded and the
others still run.
"""

from __future__ import annotations

import asyncio
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
from pyroute2.netlink.exceptions import NetlinkError

from .desired import RTPROT_FLANNEL, FdbEntry, Neighbour, Route
from .diff import DELETE, KernelRoute, KernelState, Op
from .netlink_fast import (
    CHUNK,
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

log = logging.getLogger(__name__)

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_KERNEL = 2
RT_SCOPE_LINK = 253
RTNH_F_ONLINK = 4
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7


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


def _route_from_msg(msg: Any, links: dict[int, str]) -> Route | None:
    dst_text = _attr(msg, "RTA_DST")
    if dst_text is None or msg["dst_len"] == 0:
        return None
    dst = ipaddress.ip_network(f"{dst_text}/{msg['dst_len']}", strict=False)
    gw_text = _attr(msg, "RTA_GATEWAY")
    gateway = ipaddress.ip_address(gw_text) if gw_text else None
    oif = _attr(msg, "RTA_OIF")
    ifname = links.get(oif, f"if{oif}") if oif is not None else ""
    return Route(dst=dst, gateway=gateway, ifname=ifname, onlink=bool(msg["flags"] & RTNH_F_ONLINK))


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
    return Route(dst=dst, gateway=ip_from(r.gateway) if r.gateway else None, ifname=ifname,
                 onlink=bool(r.flags & RTNH_F_ONLINK))


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
            if (n.ifindex in device_index and n.state & NUD_PERMANENT and n.family in (AF_INET, AF_INET6)
                    and n.dst and n.lladdr):
                neighbours.add(Neighbour(links[n.ifindex], ip_from(n.dst), mac_from(n.lladdr)))
        for n in dump_neighbours(sock, AF_BRIDGE, seq=101):
            if n.ifindex in device_index and n.state & NUD_PERMANENT and n.dst and n.lladdr:
                fdb.add(FdbEntry(links[n.ifindex], mac_from(n.lladdr), ip_from(n.dst)))
    if len(_networks) > 2 * (len(routes) + len(connected)) + 1024:
        _networks.clear()
    state = KernelState(tuple(routes), frozenset(neighbours), frozenset(fdb))
    return KernelSnapshot(state, tuple(connected), links)


async def read_kernel_pyroute2(ipr: AsyncIPRoute, devices: Iterable[str] = ()) -> KernelSnapshot:
    """:func:`read_kernel` through pyroute2's parsers (about 10x slower at 5,000 peers; kept as a reference).

    Ours: main-table routes with protocol RTPROT_FLANNEL, and non-kernel routes, permanent
    neighbours and permanent FDB entries on ``devices`` (our VXLAN devices).
    """
    links = await link_names(ipr)
    device_index = {idx for idx, name in links.items() if name in set(devices)}
    routes: list[KernelRoute] = []
    connected: list[ConnectedNetwork] = []
    for family in (AF_INET, AF_INET6):
        async for msg in await ipr.route("dump", family=family):
            table = _attr(msg, "RTA_TABLE") or msg["table"]
            if table != RT_TABLE_MAIN or msg["type"] != RTN_UNICAST:
                continue
            oif = _attr(msg, "RTA_OIF")
            proto = msg["proto"]
            owned = proto == RTPROT_FLANNEL or (oif in device_index and proto != RTPROT_KERNEL)
            route = _route_from_msg(msg, links)
            if route is None:
                continue
            if owned:
                routes.append(KernelRoute(route, proto=proto, priority=_attr(msg, "RTA_PRIORITY") or 0))
            elif (
                route.gateway is None
                and oif is not None
                and oif not in device_index
                and msg["scope"] == RT_SCOPE_LINK
                and _attr(msg, "RTA_MULTIPATH") is None
                and links.get(oif) not in (None, "lo")
            ):
                connected.append(ConnectedNetwork(route.dst, route.ifname))
    neighbours: set[Neighbour] = set()
    fdb: set[FdbEntry] = set()
    for idx in sorted(device_index):
        ifname = links[idx]
        async for msg in await ipr.neigh("dump", ifindex=idx):
            if msg["ifindex"] != idx or not msg["state"] & NUD_PERMANENT:
                continue
            dst, lladdr = _attr(msg, "NDA_DST"), _attr(msg, "NDA_LLADDR")
            if msg["family"] in (AF_INET, AF_INET6) and dst and lladdr:
                neighbours.add(Neighbour(ifname, ipaddress.ip_address(dst), lladdr.lower()))
        async for msg in await ipr.fdb("dump", ifindex=idx):
            if msg["ifindex"] != idx or not msg["state"] & NUD_PERMANENT:
                continue
            dst, lladdr = _attr(msg, "NDA_DST"), _attr(msg, "NDA_LLADDR")
            if dst and lladdr:
                fdb.add(FdbEntry(ifname, lladdr.lower(), ipaddress.ip_address(dst)))
    state = KernelState(tuple(routes), frozenset(neighbours), frozenset(fdb))
    return KernelSnapshot(state, tuple(connected), links)


async def read_public_interface(
    ipr: AsyncIPRoute, ifname: str | None = None, *, ipv4: bool = True, ipv6: bool = False
) -> PublicInterface:
    """The underlay interface: ``ifname`` if given, else the interface of the default route.

    Its first global address of each wanted family becomes the node's public IP (flannel's
    ``--iface`` / default-route detection, without ``--public-ip`` overrides: pass those to
    :class:`PublicInterface` directly).
    """
    links = await link_names(ipr)
    if ifname is None:
        for family in ((AF_INET,) if ipv4 else ()) + ((AF_INET6,) if ipv6 else ()):
            async for msg in await ipr.route("dump", family=family):
                table = _attr(msg, "RTA_TABLE") or msg["table"]
                if table == RT_TABLE_MAIN and msg["dst_len"] == 0 and _attr(msg, "RTA_OIF"):
                    ifname = links.get(_attr(msg, "RTA_OIF"))
                    break
            if ifname:
                break
        if ifname is None:
            raise KernelError("no --iface given and no default route to find the public interface by")
    index = await link_index(ipr, ifname)
    if index is None:
        raise KernelError(f"public interface {ifname!r} does not exist")
    mtu = 0
    async for link in await ipr.link("dump"):
        if link["index"] == index:
            mtu = _attr(link, "IFLA_MTU")
    addr4 = addr6 = None
    async for msg in await ipr.addr("dump"):
        if msg["index"] != index or msg["scope"] != 0:
            continue
        text = _attr(msg, "IFA_ADDRESS")
        if msg["family"] == AF_INET and addr4 is None:
            addr4 = ipaddress.IPv4Address(_attr(msg, "IFA_LOCAL") or text)
        elif msg["family"] == AF_INET6 and addr6 is None:
            addr6 = ipaddress.IPv6Address(text)
    if ipv4 and addr4 is None:
        raise KernelError(f"public interface {ifname!r} has no global IPv4 address")
    if ipv6 and addr6 is None:
        raise KernelError(f"public interface {ifname!r} has no global IPv6 address")
    return PublicInterface(ifname=ifname, ifindex=index, mtu=mtu, ipv4=addr4, ipv6=addr6)


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


def _phases(ops: Sequence[Op]) -> list[list[Op]]:
    """Consecutive runs of the same (action kind, object type): within a run order does not matter."""
    phases: list[list[Op]] = []
    last: tuple[bool, type] | None = None
    for op in ops:
        key = (op.action == DELETE, type(op.obj))
        if key != last:
            phases.append([])
            last = key
        phases[-1].append(op)
    return phases


class PyrouteApplier:
    """Applies ops with ``AsyncIPRoute``, ``concurrency`` requests in flight within each phase.

    Adds and changes use netlink *replace* (idempotent, never a delete + add); deleting
    something already gone counts as done.
    """

    def __init__(self, ipr: AsyncIPRoute, *, concurrency: int = 64) -> None:
        self._ipr = ipr
        self._concurrency = concurrency
        self._index: dict[str, int] = {}

    async def _ifindex(self, ifname: str) -> int:
        idx = self._index.get(ifname)
        if idx is None:
            found = await link_index(self._ipr, ifname)
            if found is None:
                raise KernelError(f"device {ifname!r} does not exist")
            idx = self._index[ifname] = found
        return idx

    async def _one(self, op: Op) -> None:
        obj = op.obj
        ipr = self._ipr
        if isinstance(obj, Route):
            kw: dict[str, Any] = {"dst": str(obj.dst), "table": RT_TABLE_MAIN}
            if obj.ifname:
                kw["oif"] = await self._ifindex(obj.ifname)
            if obj.gateway is not None:
                kw["gateway"] = str(obj.gateway)
            if op.action == DELETE:
                if op.priority:
                    kw["priority"] = op.priority
                await ipr.route("del", **kw)
            else:
                await ipr.route(
                    "replace", proto=RTPROT_FLANNEL, flags=RTNH_F_ONLINK if obj.onlink else 0, **kw
                )
        elif isinstance(obj, Neighbour):
            idx = await self._ifindex(obj.ifname)
            if op.action == DELETE:
                await ipr.neigh("del", ifindex=idx, dst=str(obj.dst))
            else:
                await ipr.neigh(
                    "replace", ifindex=idx, dst=str(obj.dst), lladdr=obj.lladdr, state=NUD_PERMANENT
                )
        else:
            idx = await self._ifindex(obj.ifname)
            if op.action == DELETE:
                await ipr.fdb("del", ifindex=idx, lladdr=obj.lladdr, dst=str(obj.dst))
            else:
                await ipr.fdb(
                    "replace",
                    ifindex=idx,
                    lladdr=obj.lladdr,
                    dst=str(obj.dst),
                    state=NUD_PERMANENT | NUD_NOARP,
                    flags=NTF_SELF,
                )

    async def _guarded(self, op: Op, sem: asyncio.Semaphore) -> OpFailure | None:
        async with sem:
            try:
                await self._one(op)
            except NetlinkError as e:
                if op.action == DELETE and e.code in (errno.ENOENT, errno.ESRCH):
                    return None
                return OpFailure(op, f"netlink error {e.code} ({errno.errorcode.get(e.code, '?')}): {e}")
            except (KernelError, OSError, ValueError) as e:
                return OpFailure(op, f"{type(e).__name__}: {e}")
            return None

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        self._index.clear()
        sem = asyncio.Semaphore(self._concurrency)
        failures: list[OpFailure] = []
        for phase in _phases(ops):
            results = await asyncio.gather(*(self._guarded(op, sem) for op in phase))
            failures.extend(f for f in results if f is not None)
        for f in failures:
            log.warning("kernel refused %s", f)
        return ApplyResult(applied=len(ops) - len(failures), failures=tuple(failures))


class TemplateApplier:
    """Applies ops as pyroute2-encoded message templates, ``chunk`` per ``sendmsg``, ACKs read after.

    Same kernel effect as :class:`PyrouteApplier` (netlink *replace* for adds and changes; a
    delete of something already gone counts as done), without pyroute2's per-request encoding
    cost; see :mod:`backend_service.netlink_fast`. The kernel carries out one socket's messages
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
_GONE = ("No such process", "No such file or directory", "does not exist", "Cannot find device")


def _batch_line(op: Op) -> tuple[str, str]:
    """(tool, batch line) for one op, in iproute2's syntax."""
    obj = op.obj
    if isinstance(obj, Route):
        via = f" via {obj.gateway}" if obj.gateway is not None else ""
        dev = f" dev {obj.ifname}" if obj.ifname else ""
        if op.action == DELETE:
            metric = f" metric {op.priority}" if op.priority else ""
            return "ip", f"route del {obj.dst}{via}{dev}{metric} table main"
        onlink = " onlink" if obj.onlink else ""
        return "ip", f"route replace {obj.dst}{via}{dev}{onlink} proto {RTPROT_FLANNEL} table main"
    if isinstance(obj, Neighbour):
        if op.action == DELETE:
            return "ip", f"neigh del {obj.dst} dev {obj.ifname}"
        return "ip", f"neigh replace {obj.dst} lladdr {obj.lladdr} dev {obj.ifname} nud permanent"
    if op.action == DELETE:
        return "bridge", f"fdb del {obj.lladdr} dev {obj.ifname} dst {obj.dst} self"
    return "bridge", f"fdb replace {obj.lladdr} dev {obj.ifname} dst {obj.dst} self permanent"


class IpBatchApplier:
    """Applies ops through ``ip -force -batch -`` and ``bridge -force -batch -``, one process per phase.

    About 7x faster than pyroute2 for bulk changes (pyroute2 is CPU-bound encoding requests):
    useful for the first reconcile of a large cluster. Failures are mapped back to their ops
    from iproute2's ``Command failed -:<line>`` messages; when the tool stops without naming the
    line, the batch is re-run op by op through ``fallback`` (e.g. a :class:`PyrouteApplier`).
    ``command_prefix`` runs the tools through e.g. ``ip netns exec <ns>``.
    """

    def __init__(self, command_prefix: Sequence[str] = (), *, fallback: Applier | None = None) -> None:
        self.prefix = list(command_prefix)
        self.fallback = fallback

    async def _batch(self, tool: str, ops: list[Op], lines: list[str]) -> list[OpFailure]:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            tool,
            "-force",
            "-batch",
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate(("\n".join(lines) + "\n").encode())
        if proc.returncode == 0:
            return []
        failures: list[OpFailure] = []
        pending: list[str] = []
        mapped = False
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("Command failed -:"):
                try:
                    n = int(line.rsplit(":", 1)[1]) - 1
                except ValueError:
                    continue
                message = "; ".join(pending) or "failed"
                pending = []
                if 0 <= n < len(ops):
                    mapped = True
                    op = ops[n]
                    if not (op.action == DELETE and any(g in message for g in _GONE)):
                        failures.append(OpFailure(op, f"{tool}: {message}"))
            else:
                pending.append(line.strip())
        if not mapped:
            # The tool stopped without naming the line (`ip neigh` exits on its first error even
            # with -force): every op is idempotent, so run the batch again one op at a time.
            if self.fallback is not None:
                return list((await self.fallback.apply(ops)).failures)
            return [
                OpFailure(op, f"{tool} -batch exited {proc.returncode}: {err.decode().strip()}") for op in ops
            ]
        return failures

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        failures: list[OpFailure] = []
        for phase in _phases(ops):
            by_tool: dict[str, tuple[list[Op], list[str]]] = {}
            for op in phase:
                tool, line = _batch_line(op)
                bucket = by_tool.setdefault(tool, ([], []))
                bucket[0].append(op)
                bucket[1].append(line)
            for tool, (tool_ops, lines) in by_tool.items():
                failures += await self._batch(tool, tool_ops, lines)
        for f in failures:
            log.warning("kernel refused %s", f)
        return ApplyResult(applied=len(ops) - len(failures), failures=tuple(failures))
