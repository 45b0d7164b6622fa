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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
    """The kernel as the reconciler sees it: read what we own, apply ops."""

    async def read(self, devices: Iterable[str]) -> KernelSnapshot:
        """What we own on (and through) ``devices``, the connected networks, the link names."""
        ...

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Carry out ``ops`` in order; every op is tried even when some fail."""
        ...
