"""The kernel as the backend models it: the objects we own as read back, operations on them, results.

Pure values. :class:`KernelState` is what the kernel holds of ours (:mod:`backend_service.kernel.read`
fills it); :class:`Op` is one change (:mod:`backend_service.kernel.diff` computes them,
:mod:`backend_service.kernel.apply` carries them out); :func:`identity` is what the kernel keys each
object by. :class:`Kernel` is what the reconciler needs of the kernel.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..desired import RTPROT_FLANNEL, FdbEntry, Neighbour, PeerPlan, Route, WgPeer
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


def identity_print(obj: KernelObject) -> Fingerprint:
    """:func:`identity` as a tuple of plain values (addresses packed), which a read makes from a raw entry
    without building the object (:func:`route_identity`, :func:`neighbour_identity`, :func:`fdb_identity`)."""
    if isinstance(obj, Route):
        return route_identity(obj.dst.network_address.packed, obj.dst.prefixlen)
    if isinstance(obj, Neighbour):
        return neighbour_identity(obj.ifname, obj.dst.packed)
    if isinstance(obj, FdbEntry):
        return fdb_identity(obj.ifname, obj.lladdr)
    return ("wgpeer", obj.ifname, obj.public_key)


def route_identity(dst: bytes, dst_len: int) -> Fingerprint:
    return ("route", dst, dst_len)


def neighbour_identity(ifname: str, dst: bytes) -> Fingerprint:
    return ("neigh", ifname, dst)


def fdb_identity(ifname: str, lladdr: str) -> Fingerprint:
    return ("fdb", ifname, lladdr)


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


def sorted_hashes(hashes: Iterable[int]) -> array[int]:
    """``hashes`` (of :func:`hash`: 64-bit, signed) sorted, as 8-byte integers, without a Python integer alive per
    hash at once: by the top byte, then each part (one sorted list of 30,000 was ~1.2 MB beside a full plan at
    10,000 peers)."""
    parts = [array("q") for _ in range(256)]
    for h in hashes:
        parts[(h >> 56) + 128].append(h)
    out = array("q")
    for part in parts:
        out.extend(sorted(part))
    return out


class Expected:
    """What a full plan expects the kernel to hold, handed to a read so that it builds no object for an entry
    that is exactly one of them (at 10,000 peers a whole read was 30,000 objects alive beside the plan's).

    ``objects``: every object the plan would have the kernel hold; they are looked up by the hash of their
    :func:`fingerprint`, kept as a sorted array of 8-byte integers with a byte of state each (a dict and sets
    of Python integers were 8 MB at 30,000 objects). A read calls :meth:`seen` with each entry's
    fingerprint: True when the entry is one of those (it is then only marked found); :attr:`deletes` False
    (a plan before SYNCED) asks for no object at all, since such a plan writes what is not exactly held and
    deletes nothing; :attr:`identities`, when not None, gathers the hash of every entry's
    :func:`identity_print` (what early plans go by). Hashes of str and bytes are keyed per process, as for
    :class:`Digest`: a collision is as unlikely, and costs one write that the next full reconcile makes."""

    __slots__ = (
        "_hashes",
        "_state",
        "connected",
        "deletes",
        "found",
        "identities",
        "matched",
        "objects",
        "plans",
    )

    _FOUND, _MATCHED = 1, 2

    def __init__(
        self,
        objects: Sequence[KernelObject],
        connected: tuple[ConnectedNetwork, ...],
        *,
        deletes: bool,
        identities: bool,
        plans: dict[str, PeerPlan] | None = None,
    ) -> None:
        self.objects = objects
        self._hashes = sorted_hashes(hash(fp) for obj in objects if (fp := fingerprint(obj)) is not None)
        self._state = bytearray(len(self._hashes))
        self.connected = connected
        """The connected networks the plan was made for."""
        self.deletes = deletes
        self.found = 0
        """How many expected objects the read found."""
        self.matched = 0
        """How many of those the plan still wants (:meth:`match`)."""
        self.identities: array[int] | None = array("q") if identities else None
        self.plans = plans or {}
        """What the planner made for it (kept for the plan that follows the read)."""

    def _index(self, fp: Fingerprint) -> int:
        h = hash(fp)
        i = bisect_left(self._hashes, h)
        return i if i < len(self._hashes) and self._hashes[i] == h else -1

    def seen(self, fp: Fingerprint) -> bool:
        """``fp`` is one of the expected objects' (now marked found)."""
        i = self._index(fp)
        if i < 0:
            return False
        if not self._state[i]:
            self._state[i] = self._FOUND
            self.found += 1
        return True

    def held(self, identity_fp: Fingerprint) -> None:
        """The kernel holds an entry of this :func:`identity_print` (kept only when asked for)."""
        if self.identities is not None:
            self.identities.append(hash(identity_fp))

    def match(self, obj: KernelObject) -> bool:
        """``obj`` (wanted by the plan) is exactly what the read found: no op either way."""
        fp = fingerprint(obj)
        i = -1 if fp is None else self._index(fp)
        if i < 0 or not self._state[i]:
            return False
        if self._state[i] == self._FOUND:
            self._state[i] = self._MATCHED
            self.matched += 1
        return True

    def found_unwanted(self) -> list[KernelObject]:
        """The expected objects the read found that no :meth:`match` claimed (their leases changed during
        the read): the kernel holds them, exactly as we would have written them."""
        out: list[KernelObject] = []
        if self.found == self.matched:
            return out
        for obj in self.objects:
            fp = fingerprint(obj)
            i = -1 if fp is None else self._index(fp)
            if i >= 0 and self._state[i] == self._FOUND:
                self._state[i] = self._MATCHED
                out.append(obj)
        return out


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

    def objects(self) -> Iterator[KernelObject]:
        """Every object held."""
        for kr in self.routes:
            yield kr.route
        yield from self.neighbours
        yield from self.fdb
        yield from self.wg_peers

    def joined(self, other: KernelState) -> KernelState:
        """What this state and ``other`` hold together."""
        return KernelState(
            self.routes + other.routes,
            self.neighbours | other.neighbours,
            self.fdb | other.fdb,
            self.wg_peers | other.wg_peers,
        )

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

    async def read(self, devices: Iterable[str], expect: Expected | None = None) -> KernelSnapshot:
        """What we own on (and through) ``devices``, the connected networks, the link names; with ``expect``,
        no object for an entry that :meth:`Expected.seen` knows (and none at all unless it deletes)."""
        ...

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Carry out ``ops`` in order; every op is tried even when some fail."""
        ...

    async def check(self, devices: Iterable[str]) -> KernelCheck | None:
        """What :meth:`read` would find, as a digest; None when that cannot tell (WireGuard devices,
        whose peers only ``wg`` shows)."""
        ...
