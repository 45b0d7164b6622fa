"""The kernel as the backend models it: the objects we own as read back, operations on them, results.

Pure values. :class:`KernelState` is what the kernel holds of ours (:mod:`backend_service.kernel.read`
fills it); :class:`Op` is one change (:mod:`backend_service.kernel.diff` computes them,
:mod:`backend_service.kernel.apply` carries them out); :func:`identity` is what the kernel keys each
object by. :class:`Kernel` is what the reconciler needs of the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..desired import RTPROT_FLANNEL, FdbEntry, Neighbour, Route, WgPeer
from ..node import ConnectedNetwork


class KernelError(RuntimeError):
    """A kernel operation or lookup failed; the message says which object and why."""


REPLACE = "replace"
DELETE = "delete"

KernelObject = Route | Neighbour | FdbEntry | WgPeer


def identity(obj: KernelObject) -> tuple[object, ...]:
    """What the kernel keys ``obj`` by: a replace of the same identity rewrites it in place."""
    if isinstance(obj, Route):
        return ("route", obj.dst)
    if isinstance(obj, Neighbour):
        return ("neigh", obj.ifname, obj.dst)
    if isinstance(obj, WgPeer):
        return ("wgpeer", obj.ifname, obj.public_key)
    return ("fdb", obj.ifname, obj.lladdr)


def default_metric(route: Route) -> int:
    """The metric the kernel gives a route added without one: 0 for IPv4, 1024 for IPv6."""
    return 0 if route.dst.version == 4 else 1024


# --- fingerprints: what a periodic check compares, without building objects --------------------

Fingerprint = tuple[object, ...]


def route_print(
    dst: bytes, dst_len: int, gateway: bytes | None, ifname: str, onlink: bool, proto: int, priority: int
) -> Fingerprint:
    """A route as a tuple of plain values (addresses packed); equal for equal routes, read or desired."""
    return ("route", dst, dst_len, gateway, ifname, onlink, proto, priority)


def neighbour_print(ifname: str, dst: bytes, lladdr: str) -> Fingerprint:
    return ("neigh", ifname, dst, lladdr)


def fdb_print(ifname: str, lladdr: str, dst: bytes) -> Fingerprint:
    return ("fdb", ifname, lladdr, dst)


def fingerprint(obj: KernelObject) -> Fingerprint | None:
    """``obj`` as the kernel holds it when we wrote it (a route: our protocol and the default metric);
    None for a WireGuard peer, which netlink dumps do not show."""
    if isinstance(obj, Route):
        gateway = obj.gateway.packed if obj.gateway is not None else None
        return route_print(
            obj.dst.network_address.packed,
            obj.dst.prefixlen,
            gateway,
            obj.ifname,
            obj.onlink,
            RTPROT_FLANNEL,
            default_metric(obj),
        )
    if isinstance(obj, Neighbour):
        return neighbour_print(obj.ifname, obj.dst.packed, obj.lladdr)
    if isinstance(obj, FdbEntry):
        return fdb_print(obj.ifname, obj.lladdr, obj.dst.packed)
    return None


_MASK = (1 << 64) - 1


@dataclass
class Digest:
    """A multiset of fingerprints in two numbers: how many, and the sum of their hashes (mod 2**64).

    Equal multisets have equal digests; unequal ones collide only by chance (hashes of str and bytes
    are keyed per process), which a check accepts: the full reconcile it would have run is also
    run whenever anything else is in doubt."""

    count: int = 0
    total: int = 0

    def add(self, fp: Fingerprint, times: int = 1) -> None:
        self.count += times
        self.total = (self.total + times * hash(fp)) & _MASK


@dataclass(frozen=True)
class KernelCheck:
    """A cheap read of the kernel: the digest of what we own (what :class:`KernelState` would hold, as
    fingerprints), the connected networks and the link names, with no object built per entry."""

    owned: Digest
    connected: tuple[ConnectedNetwork, ...]
    links: dict[int, str] = field(compare=False)


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route we own as read from the kernel: the route plus what makes it differ from ours."""

    route: Route
    proto: int = RTPROT_FLANNEL
    priority: int = 0

    @property
    def is_exactly(self) -> Route | None:
        """The route, if the kernel holds it exactly as we would have created it."""
        exact = self.proto == RTPROT_FLANNEL and self.priority == default_metric(self.route)
        return self.route if exact else None


@dataclass(frozen=True)
class KernelState:
    """Routes, permanent neighbours, permanent FDB entries and WireGuard peers that we own, as the
    kernel (and the WireGuard devices) have them."""

    routes: tuple[KernelRoute, ...] = ()
    neighbours: frozenset[Neighbour] = frozenset()
    fdb: frozenset[FdbEntry] = frozenset()
    wg_peers: frozenset[WgPeer] = frozenset()

    def identities(self) -> set[tuple[object, ...]]:
        """The :func:`identity` of every object held."""
        held = {identity(kr.route) for kr in self.routes}
        for objects in (self.neighbours, self.fdb, self.wg_peers):
            held.update(identity(obj) for obj in objects)
        return held

    @classmethod
    def holding(cls, objects: Iterable[KernelObject]) -> KernelState:
        """The state of a kernel that holds exactly ``objects``, as we would have written them."""
        routes: list[KernelRoute] = []
        neighbours: set[Neighbour] = set()
        fdb: set[FdbEntry] = set()
        wg: set[WgPeer] = set()
        for obj in objects:
            if isinstance(obj, Route):
                routes.append(KernelRoute(obj, priority=default_metric(obj)))
            elif isinstance(obj, Neighbour):
                neighbours.add(obj)
            elif isinstance(obj, WgPeer):
                wg.add(obj)
            else:
                fdb.add(obj)
        return cls(tuple(routes), frozenset(neighbours), frozenset(fdb), frozenset(wg))


@dataclass(frozen=True, slots=True)
class Op:
    """One kernel change. ``priority`` is the metric of a route being deleted."""

    action: str
    obj: KernelObject
    priority: int = 0

    def __str__(self) -> str:
        metric = f" metric {self.priority}" if self.priority else ""
        return f"{self.action} {self.obj}{metric}"


@dataclass(frozen=True)
class KernelSnapshot:
    """One read of the kernel: what we own, the connected networks, and the link names."""

    state: KernelState
    connected: tuple[ConnectedNetwork, ...]
    links: dict[int, str] = field(compare=False)


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


class Kernel(Protocol):
    """The kernel as the reconciler sees it: read what we own (or check it), apply ops."""

    async def read(self, devices: Iterable[str]) -> KernelSnapshot:
        """What we own on (and through) ``devices``, the connected networks, the link names."""
        ...

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Carry out ``ops`` in order; every op is tried even when some fail."""
        ...

    async def check(self, devices: Iterable[str]) -> KernelCheck | None:
        """What :meth:`read` would find, as a digest; None when that cannot tell (WireGuard devices,
        whose peers only ``wg`` shows)."""
        ...
