"""Raw rtnetlink observers of what the backend programmed, with no parsing library in the hot path:
:class:`KernelCounter` dumps and counts, :class:`KernelTally` counts from the kernel's announcements
as they arrive (no dumps: a dump of 30,000 objects every 50 ms took most of a core and, for the FDB,
the RTNL lock the backend's own writes wait for), :class:`KernelMonitor` timestamps every change as
it arrives. All see the network namespace of the thread that creates them.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

RTPROT_FLANNEL = 70
"""The route protocol the backend marks its routes with."""
DEVICE = "flannel.1"
"""The VXLAN device of VNI 1, where the backend keeps its neighbour and FDB entries."""

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NUD_PERMANENT = 0x80
AF_BRIDGE = 7
RTMGRP_NEIGH, RTMGRP_IPV4_ROUTE = 0x4, 0x40
RTA_DST = 1
NDA_DST, NDA_LLADDR = 1, 2
SO_RCVBUFFORCE = 33
_HDR = struct.Struct("=IHHII")


def _nl_socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.bind((0, groups))
    return sock


def ifindex(name: str) -> int:
    """The index of device ``name`` in this thread's namespace, 0 when there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


class KernelCounter:
    """Counts our routes (proto 70), and the permanent neighbours and FDB entries on ``device``, by dump."""

    def __init__(self, device: str = DEVICE) -> None:
        self.device = device
        self.sock = _nl_socket()
        self.seq = 0

    def _dump(self, msg_type: int, family: int, body: bytes, handle: Callable[[bytes, int], None]) -> None:
        self.seq += 1
        hdr = _HDR.pack(_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        self.sock.send(hdr + body)
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off < len(data):
                length, mtype, _, _, _ = _HDR.unpack_from(data, off)
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "netlink dump failed")
                handle(data, off + 16)
                off += (length + 3) & ~3

    def counts(self) -> tuple[int, int, int]:
        """(routes with proto 70, permanent neighbours on the device, permanent FDB entries on the device)."""
        dev = ifindex(self.device)
        n = [0, 0, 0]

        def route(data: bytes, off: int) -> None:
            if data[off + 5] == RTPROT_FLANNEL:
                n[0] += 1

        def neigh(which: int) -> Callable[[bytes, int], None]:
            def h(data: bytes, off: int) -> None:
                idx, state = struct.unpack_from("=iH", data, off + 4)
                if idx == dev and state & NUD_PERMANENT:
                    n[which] += 1

            return h

        self._dump(
            RTM_GETROUTE,
            socket.AF_INET,
            struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0),
            route,
        )
        if dev:
            self._dump(
                RTM_GETNEIGH, socket.AF_INET, struct.pack("=BxxxiHBB", socket.AF_INET, 0, 0, 0, 0), neigh(1)
            )
            self._dump(RTM_GETNEIGH, AF_BRIDGE, struct.pack("=BxxxiHBB", AF_BRIDGE, 0, 0, 0, 0), neigh(2))
        return n[0], n[1], n[2]

    def close(self) -> None:
        self.sock.close()


class _Listener:
    """A thread that reads the kernel's IPv4 route and neighbour notifications and hands each buffer, with
    the time it arrived, to :meth:`_received`, until :meth:`close`. ``overruns`` counts the times the
    kernel dropped notifications because we fell behind (ENOBUFS). Subclasses set their state first."""

    def __init__(self) -> None:
        self.sock = _nl_socket(RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH)
        self.sock.settimeout(0.2)
        self.overruns = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _received(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        recv, received = self.sock.recv, self._received
        while not self._stop:
            try:
                data = recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: we fell behind
                self.overruns += 1
                continue
            received(data, time.monotonic())

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


class KernelTally(_Listener):
    """Our routes (proto 70), and the permanent neighbours and FDB entries on ``device``, counted from
    netlink notifications in a thread (each object once, by its key; deletions count down), with the
    time of the first one. ``overruns`` > 0: notifications were lost, the counts are not to be trusted."""

    def __init__(self, device: str = DEVICE) -> None:
        self.device = device
        self.routes: set[bytes] = set()
        self.neighbours: dict[int, set[bytes]] = {}  # by ifindex: the device may not exist yet
        self.fdb: dict[int, set[bytes]] = {}
        self.first: float | None = None  #: monotonic time of the first object announced
        self._lock = threading.Lock()
        super().__init__()

    def counts(self) -> tuple[int, int, int]:
        """(routes with proto 70, permanent neighbours on the device, permanent FDB entries on it)."""
        dev = ifindex(self.device)
        with self._lock:
            return len(self.routes), len(self.neighbours.get(dev, ())), len(self.fdb.get(dev, ()))

    def close_and_check(self, at_least: int) -> tuple[int, int, int]:
        """Stop listening and count once by a dump (the kernel holds what its notifications said):
        (routes, neighbours, FDB entries); RuntimeError unless there are ``at_least`` of each."""
        self.close()
        counter = KernelCounter(self.device)
        counts = counter.counts()
        counter.close()
        if min(counts) < at_least:
            raise RuntimeError(f"the kernel holds {counts} (routes, neighbours, FDB), not {at_least} of each")
        return counts

    def _received(self, data: bytes, now: float) -> None:
        with self._lock:
            self._count(data, now)

    def _count(self, data: bytes, now: float) -> None:
        off = 0
        while off + 16 <= len(data):
            length, mtype, _, _, _ = _HDR.unpack_from(data, off)
            body, end = off + 16, off + length
            added = mtype in (RTM_NEWROUTE, RTM_NEWNEIGH)
            if mtype in (RTM_NEWROUTE, RTM_DELROUTE) and data[body + 5] == RTPROT_FLANNEL:
                key = _attr(data, body + 12, end, RTA_DST)
                (self.routes.add if added else self.routes.discard)(key)
            elif mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
                family = data[body]
                idx, state = struct.unpack_from("=iH", data, body + 4)
                fdb = family == AF_BRIDGE
                key = _attr(data, body + 12, end, NDA_LLADDR if fdb else NDA_DST)
                held = (self.fdb if fdb else self.neighbours).setdefault(idx, set())
                if added and state & NUD_PERMANENT:
                    held.add(key)
                else:
                    held.discard(key)
            else:
                added = False
            if added and self.first is None:
                self.first = now
            off += (max(length, 16) + 3) & ~3


def _attr(data: bytes, off: int, end: int, wanted: int) -> bytes:
    """The value of attribute ``wanted`` among the attributes from ``off`` to ``end`` (b"" if absent)."""
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4:
            break
        if atype & 0x3FFF == wanted:
            return data[off + 4 : off + alen]
        off += (alen + 3) & ~3
    return b""


@dataclass(frozen=True)
class KernelEvent:
    t: float
    kind: str  # "route+", "route-", "neigh+", "neigh-"
    dst: str  # route destination "10.A.B.0", or "" for neighbour/FDB events


class KernelMonitor(_Listener):
    """Records every IPv4 route and neighbour/FDB change with the time it arrived (a thread)."""

    def __init__(self) -> None:
        self.events: list[KernelEvent] = []
        super().__init__()

    def _received(self, data: bytes, now: float) -> None:
        append = self.events.append
        off = 0
        while off + 16 <= len(data):
            length, mtype, _, _, _ = _HDR.unpack_from(data, off)
            if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                dst = ""
                a = off + 16 + 12
                end = off + length
                while a + 4 <= end:
                    alen, atype = struct.unpack_from("=HH", data, a)
                    if alen < 4:
                        break
                    if atype == RTA_DST and alen == 8:
                        dst = socket.inet_ntoa(data[a + 4 : a + 8])
                        break
                    a += (alen + 3) & ~3
                if data[off + 16 + 5] == RTPROT_FLANNEL or mtype == RTM_DELROUTE:
                    append(KernelEvent(now, "route+" if mtype == RTM_NEWROUTE else "route-", dst))
            elif mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
                append(KernelEvent(now, "neigh+" if mtype == RTM_NEWNEIGH else "neigh-", ""))
            off += (max(length, 16) + 3) & ~3
