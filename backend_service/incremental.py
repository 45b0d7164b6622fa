"""A lease-stream delta applied without a full reconcile: only the changed peers' objects.

A full reconcile (read the kernel, validate every lease, diff everything) costs O(cluster); it runs
after every snapshot, on the resync timer, and whenever this path cannot be sure. Between them, a
delta of k leases costs O(k): each changed lease is validated on its own, its objects computed with
the backend, and compared with the objects applied for it last time. Overlaps between leases are
ordered by key across the whole set, so any overlap sends the caller back to a full reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping

from proto.flannel.v1 import lease_pb2

from .backend import Backend
from .config import NetworkConfig
from .dataplane import ReconcileReport
from .desired import DesiredState, Neighbour, Route
from .diff import DELETE, REPLACE, KernelObject, Op, default_metric
from .leases import LeaseError, PeerLease
from .node import LocalNode
from .validate import OVERLAPS_LEASE, Rejection, check_lease


def _identity(obj: KernelObject) -> tuple[object, ...]:
    """What the kernel keys the object by: a replace of the same identity rewrites it in place."""
    if isinstance(obj, Route):
        return ("route", obj.dst)
    if isinstance(obj, Neighbour):
        return ("neigh", obj.ifname, obj.dst)
    return ("fdb", obj.ifname, obj.lladdr)


def _objects(state: DesiredState) -> tuple[KernelObject, ...]:
    return (*state.fdb, *state.neighbours, *state.routes)


def _order(op: Op) -> int:
    # Route deletes; FDB/neighbour (re)writes, then the routes that use them; last the FDB/neighbour
    # entries nothing uses any more (a peer's old MAC goes only after its neighbour points elsewhere).
    if op.action == DELETE:
        return 0 if isinstance(op.obj, Route) else 3
    return 2 if isinstance(op.obj, Route) else 1


def peer_ops(old: tuple[KernelObject, ...], new: tuple[KernelObject, ...]) -> list[Op]:
    """Turn one peer's applied objects ``old`` into ``new``: replaces for what is new or changed,
    deletes for what is gone; nothing for what stays the same."""
    wanted = {_identity(obj): obj for obj in new}
    had = {_identity(obj): obj for obj in old}
    ops = [Op(REPLACE, obj) for key, obj in wanted.items() if had.get(key) != obj]
    ops += [Op(DELETE, obj, default_metric(obj) if isinstance(obj, Route) else 0)
            for key, obj in had.items() if key not in wanted]
    return ops


class PeerIndex:
    """Per-peer objects as last applied: rebuilt by every full reconcile, kept up by deltas."""

    def __init__(self, config: NetworkConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.node: LocalNode | None = None
        self.objects: dict[str, tuple[KernelObject, ...]] = {}
        self.modes: dict[str, str] = {}
        self.rejected: dict[str, Rejection] = {}
        self._owner: dict[object, str] = {}  # subnet -> key
        self._nets: dict[str, list[object]] = {}  # key -> its subnets

    @property
    def valid(self) -> bool:
        return self.node is not None

    def invalidate(self) -> None:
        self.node = None

    def rebuild(self, report: ReconcileReport) -> None:
        """Take the state a full reconcile left behind (only a wholly applied one is trusted)."""
        self.objects.clear()
        self.modes.clear()
        self._owner.clear()
        self._nets.clear()
        self.rejected = {r.lease.key: r for r in report.rejected}
        if report.node is None or not report.ok:
            self.node = None
            return
        for plan in report.peers:
            self._remember(plan.peer.key, plan.peer, self.backend.desired([plan.peer], report.node))
        self.node = report.node

    def _remember(self, key: str, peer: PeerLease, state: DesiredState) -> None:
        self.objects[key] = _objects(state)
        self.modes[key] = state.peers[0].mode if state.peers else ""
        nets: list[object] = [net for net in (peer.subnet, peer.ipv6_subnet) if net is not None]
        self._nets[key] = nets
        for net in nets:
            self._owner[net] = key

    def _forget(self, key: str) -> tuple[KernelObject, ...]:
        self.modes.pop(key, None)
        self.rejected.pop(key, None)
        for net in self._nets.pop(key, []):
            self._owner.pop(net, None)
        return self.objects.pop(key, ())

    def plan(self, changes: Mapping[str, lease_pb2.Lease | None]) -> list[Op] | None:
        """The ops for ``changes`` (key -> lease now, or None when removed); None when only a full
        reconcile can tell (no trusted state yet, or an overlap between leases is involved)."""
        node = self.node
        if node is None or any(r.reason == OVERLAPS_LEASE for r in self.rejected.values()):
            return None
        ops: list[Op] = []
        for key, lease in changes.items():
            old = self._forget(key)
            new: tuple[KernelObject, ...] = ()
            if lease is not None:
                try:
                    peer = check_lease(lease, self.config, node)
                except LeaseError as exc:
                    self.rejected[key] = Rejection(lease, exc.reason, f"lease {key}: {exc.message}")
                else:
                    nets = [net for net in (peer.subnet, peer.ipv6_subnet) if net is not None]
                    if any(net in self._owner for net in nets):
                        self.invalidate()
                        return None
                    state = self.backend.desired([peer], node)
                    self._remember(key, peer, state)
                    new = self.objects[key]
            ops += peer_ops(old, new)
        return sorted(ops, key=_order)
