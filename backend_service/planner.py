"""The one planner: leases → validation → desired state → diff against what the kernel holds → ops.

A *full* plan covers every lease and diffs against a fresh read of the kernel; it runs after
every snapshot, on the resync clock, whenever the node changes and after any failure. The read
builds no object for an entry that is exactly what the plan expects (:meth:`Planner.expect`, made
before the read from the connected networks of a check): at 10,000 peers 30,000 objects were
alive beside the plan's own; both sides leave out what matched, which needs no op either way. A *delta*
plan covers the leases a ``DELTA`` changed, plus every lease that shares a subnet with them
(directly or through others, so overlap resolution decides exactly as it would over the whole
cluster), and diffs against the objects the last plans wrote for those peers. Both run the same
code: :func:`~backend_service.validate.check_one` and
:func:`~backend_service.validate.resolve_overlaps` for validation, the backend's ``desired``, and
:func:`~backend_service.kernel.diff.diff` for op order and object identities; a delta is a plan over a
subset of the peers.

An *early* plan (:meth:`Planner.plan_early`) runs only between a full plan made before the first
SYNCED and the full plan at SYNCED: it covers a part of the first snapshot as it arrives and writes
only objects whose identity the kernel (as read by that full plan, plus what early plans wrote
since) does not hold at all. It replaces nothing and deletes nothing, so a restart over a
programmed kernel changes nothing before SYNCED; a lease whose subnet an earlier early plan gave
to another lease waits for the full plan, which decides everything again.

A lease's verdict is kept with it and reused by the next plan while the lease and the node are
unchanged: validation runs once per lease change, not once per resync.

The planner remembers, per peer, what the last committed plan wrote. A delta is planned only
from a trusted memory: after a full plan that was synced (deletes allowed) and wholly applied,
and deltas that were wholly applied since. Otherwise, and when a delta's objects would collide
with a peer outside it (two peers with one VTEP MAC), :meth:`Planner.plan_delta` answers None
and the caller plans in full.
"""

from __future__ import annotations

import dataclasses
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from itertools import chain

from .backend import Backend
from .config import NetworkConfig
from .desired import DesiredBuilder, DesiredState, FdbEntry, Neighbour, PeerPlan, Route
from .kernel.diff import diff
from .kernel.model import (
    Digest,
    Expected,
    KernelCheck,
    KernelObject,
    KernelSnapshot,
    KernelState,
    Op,
    fingerprint,
    identity_print,
    sorted_hashes,
)
from .leases import PeerLease
from .node import ConnectedNetwork, LocalNode
from .validate import Rejection, check_one, resolve_overlaps, subnets

Verdict = PeerLease | Rejection | None
"""What :func:`check_one` said about a lease: a candidate peer, a rejection, or None (our own)."""


@dataclass
class _Early:
    """What early plans go by: the node; what the kernel holds besides the planner's memory (which holds
    what committed plans wrote), as hashes of :func:`identity_print`: the identities the last full plan
    read (sorted, 8 bytes each: 30,000 tuples in a set were 4 MB), those early plans wrote that are not
    committed yet, and those that left the memory since (nothing is deleted before SYNCED); and the
    subnets early plans gave to a lease."""

    node: LocalNode
    read: array[int]
    pending: set[int] = field(default_factory=set)
    left: set[int] = field(default_factory=set)
    taken: set[IPv4Network | IPv6Network] = field(default_factory=set)

    def holds(self, identity_hash: int) -> bool:
        i = bisect_left(self.read, identity_hash)
        found = i < len(self.read) and self.read[i] == identity_hash
        return found or identity_hash in self.pending or identity_hash in self.left


class _Owners:
    """Which lease's committed plan holds each kernel :func:`identity`, kept per kind and device by the
    object's own fields (an identity tuple per object was 1.8 MB at 30,000 objects)."""

    def __init__(self) -> None:
        self._routes: dict[object, str] = {}
        self._by_device: dict[tuple[type, str], dict[object, str]] = {}

    def _map(self, obj: KernelObject, make: bool) -> tuple[dict[object, str] | None, object]:
        if isinstance(obj, Route):
            return self._routes, obj.dst
        field_value: object = (
            obj.dst
            if isinstance(obj, Neighbour)
            else obj.lladdr
            if isinstance(obj, FdbEntry)
            else obj.public_key
        )
        where = (type(obj), obj.ifname)
        held = self._by_device.get(where)
        if held is None and make:
            held = self._by_device[where] = {}
        return held, field_value

    def get(self, obj: KernelObject) -> str | None:
        held, key = self._map(obj, False)
        return None if held is None else held.get(key)

    def set(self, obj: KernelObject, owner: str) -> None:
        held, key = self._map(obj, True)
        assert held is not None
        held[key] = owner

    def pop(self, obj: KernelObject) -> None:
        held, key = self._map(obj, False)
        if held is not None:
            held.pop(key, None)

    def clear(self) -> None:
        self._routes.clear()
        self._by_device.clear()


@dataclass(frozen=True)
class Plan:
    """The ops for a set of peers, and what validation decided about them."""

    ops: tuple[Op, ...]
    peers: tuple[PeerPlan, ...]
    """The accepted peers in scope, each with its mode and objects."""
    rejected: tuple[Rejection, ...]
    """The rejected leases in scope."""
    scope: frozenset[str] | None
    """The lease keys planned; None for a full plan (every lease)."""
    deletes: bool
    """False before the lease stream is synced: write, delete nothing."""
    node: LocalNode
    """The node planned for (a full plan fills in its connected networks from the kernel)."""

    @property
    def full(self) -> bool:
        return self.scope is None


class Planner:
    """Plans full reconciles and deltas for one network config and backend (see the module docstring)."""

    def __init__(self, config: NetworkConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.modes: dict[str, str] = {}
        """Lease key → how the peer is reached, for every peer the committed plans program."""
        self.rejected: dict[str, Rejection] = {}
        """Lease key → why it was refused, for every rejected lease."""
        self._node: LocalNode | None = None  # set while the memory below is trusted
        self._verdicts: dict[str, Verdict] = {}
        self._verdicts_node: LocalNode | None = None  # the node the verdicts were made for
        self._early: _Early | None = None
        self._claims: dict[IPv4Network | IPv6Network, str | set[str]] = {}
        """Subnet → the key of the lease claiming it, or the keys when several do (a set costs 216 bytes
        or more: one per subnet was 2.7 MB at 10,000 peers)."""
        self._plans: dict[str, PeerPlan] = {}
        """Lease key → the committed plan of its peer (its verdict, mode and kernel objects)."""
        self._plans_node: LocalNode | None = None  # the node every plan in _plans was made for
        self._owner = _Owners()
        self._digest = Digest()  # of every object in _plans that has a fingerprint
        self._unchecked = 0  # objects in _plans without one (WireGuard peers)

    @property
    def trusted(self) -> bool:
        """A delta can be planned: the memory of what is applied matches the kernel."""
        return self._node is not None

    def invalidate(self) -> None:
        """Forget that the memory is right: the next plan must be a full one."""
        self._node = None
        self._early = None

    def _check(self, key: str, lease: bytes, node: LocalNode) -> Verdict:
        """:func:`check_one`, or the verdict on the same lease for the same node (kept in ``_verdicts``)."""
        if node == self._verdicts_node:
            old = self._verdicts.get(key)
            if old is not None and old.source == lease:
                return old
        return check_one(lease, self.config, node)

    def _verdicts_for(self, node: LocalNode) -> None:
        """Verdicts made from here on are for ``node``; earlier ones for another node are dropped."""
        if node != self._verdicts_node:
            self._verdicts = {}
            self._verdicts_node = node

    # --- the periodic check ----------------------------------------------------------------------

    def checkable(self, node: LocalNode) -> bool:
        """A check can stand in for a full plan: the memory is trusted, for this node, and every object
        in it has a fingerprint."""
        held = self._node
        return (
            held is not None
            and self._unchecked == 0
            and dataclasses.replace(node, connected=held.connected) == held
        )

    def holds(self, check: KernelCheck) -> bool:
        """The kernel holds exactly what the committed plans wrote, and the connected networks that the
        plans were made for (call only when :meth:`checkable`)."""
        assert self._node is not None
        return check.owned == self._digest and check.connected == self._node.connected

    def changes_since(self, leases: Mapping[str, bytes]) -> dict[str, bytes | None]:
        """The leases that are not the ones last planned (key → lease now, None when gone): what a
        delta must plan to bring the memory up to ``leases``. Compared by identity: the lease view keeps
        a lease's bytes until it changes."""
        verdicts = self._verdicts
        out: dict[str, bytes | None] = {}
        for key, lease in leases.items():
            verdict = verdicts.get(key)
            if verdict is None or verdict.source is not lease:
                out[key] = lease
        for key in verdicts.keys() - leases.keys():
            out[key] = None
        return out

    # --- planning ------------------------------------------------------------------------------

    def expect(
        self,
        leases: Mapping[str, bytes],
        node: LocalNode,
        connected: tuple[ConnectedNetwork, ...],
        *,
        synced: bool,
    ) -> Expected:
        """What a full plan of ``leases`` would have the kernel hold (``connected``: as a check just read
        them), for a read that builds no object for what is exactly so (:class:`Expected`); then
        :meth:`plan_full` with it. Before SYNCED (``synced=False``) the read gathers the kernel's identities
        for early plans instead of objects."""
        node = dataclasses.replace(node, connected=connected)
        if synced:
            self._early = None  # the full plan drops it anyway: not alive beside the read
        self._verdicts_for(node)
        self._verdicts = {key: self._check(key, lease, node) for key, lease in leases.items()}
        accepted, _ = resolve_overlaps([v for v in self._verdicts.values() if isinstance(v, PeerLease)])
        plans = self._peer_plans(accepted, node)
        objects = [obj for plan in plans for obj in plan.objects]
        return Expected(
            objects, connected, deletes=synced, identities=not synced, plans={p.peer.key: p for p in plans}
        )

    def plan_full(
        self,
        leases: Mapping[str, bytes],
        node: LocalNode,
        kernel: KernelSnapshot,
        *,
        synced: bool,
        expect: Expected | None = None,
    ) -> Plan:
        """Every lease, against the kernel as read; ``synced=False``: delete nothing. ``expect``: what
        :meth:`expect` gave the read (for the same ``synced``), whose found objects the read left out."""
        if expect is not None and expect.deletes != synced:
            raise ValueError("a read for a plan that deletes nothing cannot serve one that deletes")
        node = dataclasses.replace(node, connected=kernel.connected)
        self._verdicts_for(node)
        self._verdicts = {key: self._check(key, lease, node) for key, lease in leases.items()}
        if synced:
            self._early = None
        else:
            held: Iterable[int] = (hash(identity_print(obj)) for obj in kernel.state.objects())
            if expect is not None and expect.identities is not None:
                held = chain(held, expect.identities)
            self._early = _Early(node, sorted_hashes(held))
        self._claims = {}
        for key, verdict in self._verdicts.items():
            self._claim(key, verdict)
        plan = self._plan(
            self._verdicts.keys(), node, kernel.state, deletes=synced, scope=None, expect=expect
        )
        self._node = None  # trusted again only once committed
        return plan

    def plan_delta(self, changes: Mapping[str, bytes | None]) -> Plan | None:
        """The leases in ``changes`` (key → lease now, None when removed), or None when only a full
        plan can tell (no trusted memory, or objects shared with a peer outside the delta)."""
        node = self._node
        if node is None:
            return None
        touched: set[IPv4Network | IPv6Network] = set()
        for key, lease in changes.items():
            old = self._verdicts.pop(key, None)
            if isinstance(old, PeerLease):
                touched.update(subnets(old))
                for net in subnets(old):
                    self._unclaim(net, key)
            if lease is not None:
                verdict = self._verdicts[key] = self._check(key, lease, node)
                self._claim(key, verdict)
                if isinstance(verdict, PeerLease):
                    touched.update(subnets(verdict))
        scope = set(changes) | self._closure(touched)
        believed = KernelState.holding(obj for key in scope for obj in self._objects_of(key))
        plan = self._plan(scope, node, believed, deletes=True, scope=frozenset(scope))
        for peer in plan.peers:
            for obj in peer.objects:
                owner = self._owner.get(obj)
                if owner is not None and owner not in scope:
                    self.invalidate()
                    return None
        self._node = None  # trusted again only once committed
        return plan

    def plan_early(self, leases: Mapping[str, bytes]) -> Plan | None:
        """Part of the first snapshot, before SYNCED: only what the kernel lacks entirely (see the
        module docstring); None when no full plan before SYNCED set the ground."""
        early = self._early
        if early is None:
            return None
        node = early.node
        verdicts = {key: self._check(key, lease, node) for key, lease in leases.items()}
        self._verdicts.update(verdicts)
        candidates = [v for v in verdicts.values() if isinstance(v, PeerLease)]
        accepted, overlaps = resolve_overlaps(candidates)
        accepted = [peer for peer in accepted if not early.taken.intersection(subnets(peer))]
        for peer in accepted:
            early.taken.update(subnets(peer))
        desired = self.backend.desired(accepted, node)
        ops: list[Op] = []
        for op in diff(desired, KernelState(), delete=False):
            held = hash(identity_print(op.obj))
            if not early.holds(held) and self._owner.get(op.obj) is None:
                early.pending.add(held)
                ops.append(op)
        rejected = [v for v in verdicts.values() if isinstance(v, Rejection)]
        return Plan(tuple(ops), desired.peers, tuple(rejected + overlaps), frozenset(verdicts), False, node)

    def _claim(self, key: str, verdict: Verdict) -> None:
        if isinstance(verdict, PeerLease):
            for net in subnets(verdict):
                held = self._claims.get(net)
                if held is None:
                    self._claims[net] = key
                elif isinstance(held, str):
                    if held != key:
                        self._claims[net] = {held, key}
                else:
                    held.add(key)

    def _unclaim(self, net: IPv4Network | IPv6Network, key: str) -> None:
        """``key`` no longer claims ``net``; a subnet nobody claims leaves the map (churn adds new ones)."""
        held = self._claims.get(net)
        if held == key:
            del self._claims[net]
        elif isinstance(held, set):
            held.discard(key)
            if len(held) == 1:
                self._claims[net] = held.pop()

    def _claimants(self, net: IPv4Network | IPv6Network) -> Iterable[str]:
        held = self._claims.get(net)
        return () if held is None else (held,) if isinstance(held, str) else held

    def _closure(self, nets: set[IPv4Network | IPv6Network]) -> set[str]:
        """Every lease that shares a subnet with ``nets``, directly or through other leases."""
        keys: set[str] = set()
        todo = list(nets)
        seen = set(nets)
        while todo:
            for key in self._claimants(todo.pop()):
                if key in keys:
                    continue
                keys.add(key)
                verdict = self._verdicts.get(key)
                if isinstance(verdict, PeerLease):
                    fresh = [net for net in subnets(verdict) if net not in seen]
                    seen.update(fresh)
                    todo.extend(fresh)
        return keys

    def _plan(
        self,
        keys: Iterable[str],
        node: LocalNode,
        current: KernelState,
        *,
        deletes: bool,
        scope: frozenset[str] | None,
        expect: Expected | None = None,
    ) -> Plan:
        candidates: list[PeerLease] = []
        rejected: list[Rejection] = []
        for key in keys:
            verdict = self._verdicts.get(key)
            if isinstance(verdict, Rejection):
                rejected.append(verdict)
            elif verdict is not None:
                candidates.append(verdict)
        accepted, overlaps = resolve_overlaps(candidates)
        if expect is None:
            desired = self._desired(accepted, node)
        else:
            plans = self._peer_plans(
                accepted, node, expect.plans if expect.connected == node.connected else None
            )
            desired, current = _unmatched(plans, current, expect)
        ops = diff(desired, current, delete=deletes)
        return Plan(tuple(ops), desired.peers, tuple(rejected + overlaps), scope, deletes, node)

    # --- after applying ------------------------------------------------------------------------

    def commit(self, plan: Plan, applied: bool) -> None:
        """Remember what ``plan`` wrote; ``applied``: every op succeeded (else trust nothing)."""
        if plan.scope is None:
            self._plans.clear()
            self._plans_node = plan.node
            self._owner.clear()
            self.modes.clear()
            self.rejected.clear()
            self._digest, self._unchecked = Digest(), 0
        else:
            if not self._plans:
                self._plans_node = plan.node
            elif plan.node != self._plans_node:
                self._plans_node = None  # plans made for two nodes: none is reused until a full one
            early = self._early
            for key in plan.scope:
                gone = self._objects_of(key)
                self._plans.pop(key, None)
                for obj in gone:
                    self._owner.pop(obj)
                    if early is not None:  # the kernel still holds it (nothing is deleted before SYNCED)
                        early.left.add(hash(identity_print(obj)))
                self._count(gone, -1)
                self.modes.pop(key, None)
                self.rejected.pop(key, None)
        for peer in plan.peers:
            key = peer.peer.key
            self._plans[key] = peer
            self.modes[key] = peer.mode
            for obj in peer.objects:
                self._owner.set(obj, key)
            self._count(peer.objects, 1)
        self.rejected.update((r.key, r) for r in plan.rejected)
        if self._early is not None and not plan.deletes:  # what it wrote is in the memory now
            for op in plan.ops:
                self._early.pending.discard(hash(identity_print(op.obj)))
        self._node = plan.node if applied and plan.deletes else None

    def _objects_of(self, key: str) -> tuple[KernelObject, ...]:
        plan = self._plans.get(key)
        return plan.objects if plan is not None else ()

    def _peer_plans(
        self, accepted: Sequence[PeerLease], node: LocalNode, made: Mapping[str, PeerPlan] | None = None
    ) -> list[PeerPlan]:
        """Each accepted peer's plan, as :meth:`_desired` makes them; ``made``: plans made for ``node`` by
        :meth:`expect` (reused as committed ones are, for the very same verdict)."""
        reuse = node == self._plans_node
        plans: list[PeerPlan | None] = []
        fresh: list[PeerLease] = []
        for peer in accepted:
            held = self._plans.get(peer.key) if reuse else None
            if (held is None or held.peer is not peer) and made is not None:
                held = made.get(peer.key)
            if held is None or held.peer is not peer:
                held = None
                fresh.append(peer)
            plans.append(held)
        if not fresh:
            return [plan for plan in plans if plan is not None]
        new = {plan.peer.key: plan for plan in self.backend.desired(fresh, node).peers}
        out: list[PeerPlan] = []
        for peer, plan in zip(accepted, plans, strict=True):
            plan = plan or new.get(peer.key)
            if plan is not None:
                out.append(plan)
        return out

    def _desired(self, accepted: Sequence[PeerLease], node: LocalNode) -> DesiredState:
        """The backend's desired state for ``accepted``. A peer whose verdict (the very object) and node
        are those of its committed plan keeps that plan's objects: a backend's objects for a peer depend
        on the peer and the node only, so a full plan builds objects only for the peers that changed
        (at 10,000 peers, 30,000 objects less alive beside the kernel's while it runs)."""
        if node != self._plans_node:
            return self.backend.desired(accepted, node)
        kept: dict[str, PeerPlan] = {}
        fresh: list[PeerLease] = []
        for peer in accepted:
            held = self._plans.get(peer.key)
            if held is not None and held.peer is peer:
                kept[peer.key] = held
            else:
                fresh.append(peer)
        if not kept:
            return self.backend.desired(accepted, node)
        made = {plan.peer.key: plan for plan in self.backend.desired(fresh, node).peers} if fresh else {}
        out = DesiredBuilder()
        for peer in accepted:
            plan = kept.get(peer.key) or made.get(peer.key)
            if plan is not None:
                out.keep(plan)
        return out.build()

    def _count(self, objects: Iterable[KernelObject], times: int) -> None:
        for obj in objects:
            fp = fingerprint(obj)
            if fp is None:
                self._unchecked += times
            else:
                self._digest.add(fp, times)


def _unmatched(
    plans: Sequence[PeerPlan], current: KernelState, expect: Expected
) -> tuple[DesiredState, KernelState]:
    """The desired state and the kernel's, each without what the read found exactly as expected and the
    plan still wants (those need no op either way, so the diff is that of the whole); an expected object
    that was found but is no longer wanted (its lease changed during the read) is the kernel's again."""
    out = DesiredBuilder()
    for plan in plans:
        out.keep(plan, [obj for obj in plan.objects if not expect.match(obj)])
    gone = expect.found_unwanted()
    if gone:
        current = current.joined(KernelState.holding(gone))
    return out.build(), current
