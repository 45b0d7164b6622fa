"""The bulk netlink path: pyroute2-encoded message templates, pipelined sends, and lean dump parsing.

pyroute2 spends ~190 us encoding each request (its request filters and NLA machinery), ten times
what the kernel needs to carry it out. The backend only ever sends a handful of message shapes
(route / neighbour / FDB entry, add-or-replace / delete, IPv4 / IPv6), so
:class:`~backend_service.kernel.apply.TemplateApplier` has pyroute2 encode each shape *once*, with sentinel values, remembers
where the sentinels landed, and for every operation copies the template and writes the few
fields that change (sequence number, addresses, prefix length, ifindex, metric). Messages are
sent many to a ``sendmsg``, the last one asking for an ACK; the kernel's refusals are read after each
buffer and mapped back to their operations by sequence number, so a refused operation is reported and
the others still run (:func:`send_batch`).

:func:`dump_routes` and :func:`dump_neighbours` read the route, neighbour and FDB tables on a
raw socket and parse only the header fields and attributes the reconcile needs.

Both use their own ``NETLINK_ROUTE`` socket, opened in the network namespace of the given
``AsyncIPRoute`` (``SIOCGSKNS`` on its socket, then ``setns`` in a short-lived thread), so they
act on exactly the namespace pyroute2 does.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from socket import AF_INET, AF_INET6
from typing import Any, Protocol

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ..desired import RTPROT_FLANNEL, FdbEntry, Neighbour, Route
from .model import DELETE, Op

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETROUTE, RTM_GETNEIGH = 26, 30
NLM_F_DUMP = 0x300
SIOCGSKNS = 0x894C
CLONE_NEWNET = 0x40000000
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_NOWHERE = 255
RTNH_F_ONLINK = 4
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
NDA_DST, NDA_LLADDR = 1, 2

_HDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")

#: Bytes of requests per sendmsg at most (~2,000 of ours): the kernel refuses a buffer larger than the
#: socket's send buffer (``SO_SNDBUF``), which :func:`open_netlink_socket` raises to twice this.
CHUNK_BYTES = 128 << 10


# --- a raw socket in the namespace of an AsyncIPRoute -------------------------------------------


def _netns_fd_of(ipr: AsyncIPRoute) -> int | None:
    """An fd of the network namespace ``ipr``'s socket lives in (None: this process's own)."""
    try:
        sock = ipr.socket
        return fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    except (OSError, AttributeError):
        return None


def open_netlink_socket(ipr: AsyncIPRoute | None = None, *, rcvbuf: int = 8 << 20) -> socket.socket:
    """A blocking ``NETLINK_ROUTE`` socket in the same network namespace as ``ipr``."""
    nsfd = _netns_fd_of(ipr) if ipr is not None else None
    if nsfd is not None and os.fstat(nsfd).st_ino == os.stat("/proc/self/ns/net").st_ino:
        os.close(nsfd)  # the namespace we are in (the daemon's case): no thread needed
        nsfd = None
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def create() -> None:
        try:
            if nsfd is not None:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(nsfd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns: {os.strerror(err)}")
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))
        except OSError as exc:  # reported to the caller's thread below
            failed.append(exc)

    if nsfd is None:
        create()
    else:
        try:
            # setns changes only the calling thread: do it in a thread that ends right after.
            t = threading.Thread(target=create, name="netlink-setns")
            t.start()
            t.join()
        finally:
            os.close(nsfd)
    if failed:
        raise failed[0]
    sock = made[0]
    for force, plain, size in (
        (SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf),
        (SO_SNDBUFFORCE, socket.SO_SNDBUF, 2 * CHUNK_BYTES),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:  # without CAP_NET_ADMIN: as far as the system's maximum allows
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
    sock.settimeout(30.0)  # never hang a reconcile on a lost answer
    sock.bind((0, 0))
    return sock


# --- templates ----------------------------------------------------------------------------------

_SENTINEL4 = (ipaddress.IPv4Address("1.2.3.4"), ipaddress.IPv4Address("5.6.7.8"))
_SENTINEL6 = (ipaddress.IPv6Address("2001:db8:1111::1111"), ipaddress.IPv6Address("2001:db8:2222::2222"))
_SENTINEL_IFINDEX = 0x0A0B0C0D
_SENTINEL_METRIC = 0x11121314
_SENTINEL_MAC = "de:ad:be:ef:01:02"


def _encoded(msg: Any, msg_type: int, flags: int) -> bytes:
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 0
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data[: msg["header"]["length"]])


def _find(buf: bytes, needle: bytes, what: str) -> int:
    at = buf.find(needle)
    if at < 0 or buf.find(needle, at + 1) >= 0:
        raise RuntimeError(f"template: sentinel {what} not found exactly once")
    return at


@dataclass(frozen=True)
class Template:
    """One encoded message shape and where its variable fields sit."""

    data: bytes
    dst: int = -1
    gateway: int = -1
    lladdr: int = -1
    ifindex: int = -1  # offset of an RTA_OIF value, or of ndm_ifindex
    metric: int = -1


def route_template(
    delete: bool, version: int, gateway: bool, oif: bool, metric: bool, onlink: bool
) -> Template:
    """A route add-or-replace (``NLM_F_CREATE|NLM_F_REPLACE``) or delete, encoded by pyroute2."""
    dst, gw = _SENTINEL4 if version == 4 else _SENTINEL6
    msg = rtmsg()
    msg["family"] = AF_INET if version == 4 else AF_INET6
    msg["dst_len"] = dst.max_prefixlen
    msg["table"] = RT_TABLE_MAIN
    msg["type"] = RTN_UNICAST
    attrs: list[tuple[str, object]] = [("RTA_TABLE", RT_TABLE_MAIN), ("RTA_DST", str(dst))]
    if gateway:
        attrs.append(("RTA_GATEWAY", str(gw)))
    if oif:
        attrs.append(("RTA_OIF", _SENTINEL_IFINDEX))
    if delete:
        # Like `ip route del`: protocol and scope are wildcards, so any route of that dst/gw/dev/metric matches.
        msg["proto"], msg["scope"] = 0, RT_SCOPE_NOWHERE
        if metric:
            attrs.append(("RTA_PRIORITY", _SENTINEL_METRIC))
        msg["attrs"] = attrs
        data = _encoded(msg, RTM_DELROUTE, NLM_F_REQUEST)
    else:
        msg["proto"], msg["scope"] = RTPROT_FLANNEL, RT_SCOPE_UNIVERSE
        msg["flags"] = RTNH_F_ONLINK if onlink else 0
        msg["attrs"] = attrs
        data = _encoded(msg, RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE)
    return Template(
        data,
        dst=_find(data, dst.packed, "dst"),
        gateway=_find(data, gw.packed, "gateway") if gateway else -1,
        ifindex=_find(data, _U32.pack(_SENTINEL_IFINDEX), "oif") if oif else -1,
        metric=_find(data, _U32.pack(_SENTINEL_METRIC), "metric") if delete and metric else -1,
    )


def neigh_template(delete: bool, version: int, fdb: bool) -> Template:
    """A permanent neighbour, or a VXLAN FDB entry (``self permanent``), add-or-replace or delete."""
    dst = (_SENTINEL4 if version == 4 else _SENTINEL6)[0]
    msg = ndmsg()
    msg["family"] = AF_BRIDGE if fdb else (AF_INET if version == 4 else AF_INET6)
    msg["ifindex"] = _SENTINEL_IFINDEX
    attrs: list[tuple[str, object]] = [("NDA_DST", str(dst))]
    if fdb or not delete:
        attrs.insert(0, ("NDA_LLADDR", _SENTINEL_MAC))
    if fdb:
        msg["flags"] = NTF_SELF
    if not delete:
        msg["state"] = NUD_PERMANENT | NUD_NOARP if fdb else NUD_PERMANENT
    msg["attrs"] = attrs
    if delete:
        data = _encoded(msg, RTM_DELNEIGH, NLM_F_REQUEST)
    else:
        data = _encoded(msg, RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE)
    mac = bytes.fromhex(_SENTINEL_MAC.replace(":", ""))
    return Template(
        data,
        dst=_find(data, dst.packed, "dst"),
        lladdr=_find(data, mac, "lladdr") if fdb or not delete else -1,
        ifindex=_find(data, _I32.pack(_SENTINEL_IFINDEX), "ifindex"),
    )


class MessageEncoder:
    """Turns an :class:`Op` into netlink bytes from cached pyroute2-encoded templates.

    The template of each shape is looked up by a small key, with no closure built per op (a delta
    encodes three ops per change)."""

    def __init__(self) -> None:
        self._templates: dict[tuple[object, ...], Template] = {}

    def encode(self, op: Op, seq: int, ifindex: int) -> bytes:
        """The request for ``op`` with sequence number ``seq``; ``ifindex`` of its device (0: none)."""
        obj = op.obj
        delete = op.action == DELETE
        templates = self._templates
        if isinstance(obj, Route):
            dst_net = obj.dst
            version = 4 if isinstance(dst_net, IPv4Network) else 6
            gateway = obj.gateway
            has_oif = ifindex > 0
            metric = delete and op.priority != 0
            onlink = obj.onlink and not delete
            key: tuple[object, ...] = (delete, version, gateway is not None, has_oif, metric, onlink)
            t = templates.get(key)
            if t is None:
                t = templates[key] = route_template(
                    delete, version, gateway is not None, has_oif, metric, obj.onlink
                )
            buf = bytearray(t.data)
            size = 4 if version == 4 else 16
            buf[t.dst : t.dst + size] = dst_net.network_address.packed
            buf[17] = dst_net.prefixlen  # rtm_dst_len
            if gateway is not None:
                buf[t.gateway : t.gateway + size] = gateway.packed
            if has_oif:
                _U32.pack_into(buf, t.ifindex, ifindex)
            if metric:
                _U32.pack_into(buf, t.metric, op.priority)
        else:
            assert isinstance(obj, (Neighbour, FdbEntry))
            fdb = isinstance(obj, FdbEntry)
            dst = obj.dst
            version = 4 if isinstance(dst, IPv4Address) else 6
            key = (fdb, delete, version)
            t = templates.get(key)
            if t is None:
                t = templates[key] = neigh_template(delete, version, fdb)
            buf = bytearray(t.data)
            size = 4 if version == 4 else 16
            buf[t.dst : t.dst + size] = dst.packed
            if t.lladdr >= 0:
                buf[t.lladdr : t.lladdr + 6] = bytes.fromhex(obj.lladdr.replace(":", ""))
            _I32.pack_into(buf, t.ifindex, ifindex)
        _U32.pack_into(buf, 8, seq)
        return bytes(buf)


# --- sending, one ACK per buffer ----------------------------------------------------------------


class NetlinkSocket(Protocol):
    """What :func:`send_batch` needs of a netlink socket (``socket.socket``; tests fake one)."""

    def sendall(self, data: bytes | bytearray, /) -> None: ...

    def recv(self, size: int, /) -> bytes: ...


def send_batch(
    sock: NetlinkSocket, messages: Sequence[tuple[int, bytes]], chunk_bytes: int = CHUNK_BYTES
) -> dict[int, int]:
    """Send ``(seq, message)`` pairs, up to ``chunk_bytes`` to a ``sendmsg``; {seq: errno} of every refused one.

    Only the last message of each ``sendmsg`` asks for an ACK (``NLM_F_ACK``, set here). The kernel answers
    a refused request whether it asked or not, and it carries out a buffer's messages in order and answers
    them in that order, so once the last one's ACK is read every refusal before it has been read too: a
    buffer costs one ``recv`` instead of one per message. That matters in the thread that sends a large
    batch: each ``recv`` gives the GIL up and takes it back, which waits for the event loop's thread (up
    to the switch interval) whenever that thread is planning the next leases. If the socket fails (ENOBUFS:
    answers were dropped; a timeout), every message of that buffer and after it that was not refused by
    name is reported with that error; they are all idempotent, so the next reconcile simply retries them.
    """
    errors: dict[int, int] = {}
    start = 0
    try:
        while start < len(messages):
            end, size = start + 1, len(messages[start][1])
            while end < len(messages) and size + len(messages[end][1]) <= chunk_bytes:
                size += len(messages[end][1])
                end += 1
            part = messages[start:end]
            data = bytearray(b"".join(m for _, m in part))
            at = size - len(part[-1][1]) + 6  # the last message's nlmsg_flags
            _U16.pack_into(data, at, _U16.unpack_from(data, at)[0] | NLM_F_ACK)
            seqs = {seq for seq, _ in part}
            last = part[-1][0]
            sock.sendall(data)
            while last in seqs:
                answers = sock.recv(1 << 20)
                off = 0
                while off + 16 <= len(answers):
                    length, mtype, _, seq, _ = _HDR.unpack_from(answers, off)
                    if mtype == NLMSG_ERROR and seq in seqs:
                        seqs.discard(seq)
                        code = -_I32.unpack_from(answers, off + 16)[0]
                        if code:
                            errors[seq] = code
                    off += (max(length, 16) + 3) & ~3
            start = end
    except OSError as exc:
        code = exc.errno or errno.EIO
        errors.update((seq, code) for seq, _ in messages[start:] if seq not in errors)
    return errors


# --- dumps --------------------------------------------------------------------------------------


def _dump(sock: socket.socket, msg_type: int, body: bytes, seq: int) -> Iterator[tuple[bytes, int, int]]:
    """(buffer, offset of the family header, end) of each message of a dump."""
    sock.sendall(_HDR.pack(16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    while True:
        data = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _, mseq, _ = _HDR.unpack_from(data, off)
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    code = -_I32.unpack_from(data, off + 16)[0]
                    raise OSError(code, f"netlink dump failed: {os.strerror(code)}")
                yield data, off + 16, off + length
            off += (max(length, 16) + 3) & ~3


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        alen, atype = _NLA.unpack_from(data, off)
        if alen < 4:
            break
        out[atype & 0x3FFF] = data[off + 4 : off + alen]
        off += (alen + 3) & ~3
    return out


@dataclass(frozen=True, slots=True)
class RawRoute:
    """The fields of a route message that reconciling needs."""

    family: int
    dst: bytes
    dst_len: int
    gateway: bytes | None
    oif: int | None
    table: int
    proto: int
    scope: int
    type: int
    flags: int
    priority: int
    multipath: bool


def dump_routes(sock: socket.socket, family: int, seq: int = 1) -> Iterator[RawRoute]:
    """Every route of ``family`` (all tables; the caller filters), as the dump arrives: a caller that
    keeps few of them never holds the whole table."""
    body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    for data, off, end in _dump(sock, RTM_GETROUTE, body, seq):
        fam, dst_len, _, _, table, proto, scope, rtype, flags = _RTMSG.unpack_from(data, off)
        a = _attrs(data, off + _RTMSG.size, end)
        t = a.get(RTA_TABLE)
        oif = a.get(RTA_OIF)
        prio = a.get(RTA_PRIORITY)
        yield RawRoute(
            fam,
            a.get(RTA_DST, b""),
            dst_len,
            a.get(RTA_GATEWAY),
            _U32.unpack(oif)[0] if oif else None,
            _U32.unpack(t)[0] if t else table,
            proto,
            scope,
            rtype,
            flags,
            _U32.unpack(prio)[0] if prio else 0,
            RTA_MULTIPATH in a,
        )


@dataclass(frozen=True, slots=True)
class RawNeighbour:
    family: int
    ifindex: int
    state: int
    dst: bytes | None
    lladdr: bytes | None


def dump_neighbours(sock: socket.socket, family: int, seq: int = 1) -> Iterator[RawNeighbour]:
    """Every neighbour (``AF_INET``/``AF_INET6``) or FDB entry (``AF_BRIDGE``), as the dump arrives."""
    for data, off, end in _dump(sock, RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0), seq):
        fam, ifindex, state, _, _ = _NDMSG.unpack_from(data, off)
        a = _attrs(data, off + _NDMSG.size, end)
        yield RawNeighbour(fam, ifindex, state, a.get(NDA_DST), a.get(NDA_LLADDR))


def ip_from(packed: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed)


def mac_from(packed: bytes) -> str:
    return packed.hex(":")


__all__ = [
    "MessageEncoder",
    "RawNeighbour",
    "RawRoute",
    "dump_neighbours",
    "dump_routes",
    "ip_from",
    "mac_from",
    "neigh_template",
    "open_netlink_socket",
    "route_template",
    "send_batch",
]
