"""Deltas applied by peer, without a full reconcile: the same objects a full reconcile would program."""

from __future__ import annotations

from collections.abc import Sequence

from backend_service.config import VxlanOptions
from backend_service.dataplane import ReconcileReport
from backend_service.desired import DesiredState
from backend_service.diff import DELETE, REPLACE
from backend_service.incremental import PeerIndex, peer_ops
from backend_service.kernel import ApplyResult
from backend_service.leases import PeerLease
from backend_service.node import LocalNode
from backend_service.validate import validate_leases
from backend_service.vxlan import vxlan_desired

from .factory import config, lease, node


class Vxlan:
    backend_type = "vxlan"
    devices = ("flannel.1",)

    def desired(self, peers: Sequence[PeerLease], me: LocalNode) -> DesiredState:
        return vxlan_desired(peers, VxlanOptions(), me, "eth0", "flannel.1", None)


def full(index: PeerIndex, *leases: object) -> DesiredState:
    """What a full reconcile computes for ``leases``; the index takes it as applied."""
    validation = validate_leases(list(leases), index.config, node(1))  # type: ignore[arg-type]
    desired = index.backend.desired(validation.accepted, node(1))
    index.rebuild(ReconcileReport(validation, desired, (), ApplyResult(0, ()), True, node(1)))
    return desired


def test_an_added_peer_gets_exactly_its_three_objects_and_a_removed_one_loses_them() -> None:
    index = PeerIndex(config("vxlan"), Vxlan())  # type: ignore[arg-type]
    full(index, lease(2))
    ops = index.plan({lease(3).key: lease(3)})
    assert ops is not None and {op.action for op in ops} == {REPLACE} and len(ops) == 3
    assert [type(op.obj).__name__ for op in ops][-1] == "Route"  # the route goes in after its neighbour and FDB
    alone = Vxlan().desired(validate_leases([lease(3)], config("vxlan"), node(1)).accepted, node(1))
    assert {op.obj for op in ops} == set(alone.routes | alone.neighbours | alone.fdb)
    removal = index.plan({lease(3).key: None})
    assert removal is not None and {op.action for op in removal} == {DELETE} and len(removal) == 3
    assert type(removal[0].obj).__name__ == "Route"  # the route goes first


def test_an_unchanged_lease_costs_nothing_and_a_new_vtep_mac_leaves_the_route_alone() -> None:
    index = PeerIndex(config("vxlan"), Vxlan())  # type: ignore[arg-type]
    full(index, lease(2))
    assert index.plan({lease(2).key: lease(2)}) == []
    moved = lease(2, backend_data='{"VNI": 1, "VtepMAC": "0a:00:00:00:00:99"}')
    ops = index.plan({moved.key: moved})
    assert ops is not None
    # the neighbour is rewritten in place; the FDB entry is keyed by MAC: the new one in, the old one out
    assert sorted((op.action, type(op.obj).__name__) for op in ops) == [
        (DELETE, "FdbEntry"), (REPLACE, "FdbEntry"), (REPLACE, "Neighbour")]


def test_a_bad_lease_is_rejected_by_delta_and_an_overlap_asks_for_a_full_reconcile() -> None:
    index = PeerIndex(config("vxlan"), Vxlan())  # type: ignore[arg-type]
    full(index, lease(2))
    bad = lease(4, backend="host-gw")
    assert index.plan({bad.key: bad}) == []
    assert index.rejected[bad.key].reason == "BACKEND_MISMATCH"
    twin = lease(2, key="another-key-for-the-same-subnet")
    assert index.plan({twin.key: twin}) is None and not index.valid


def test_peer_ops_deletes_what_is_gone_with_the_default_metric() -> None:
    state = Vxlan().desired(validate_leases([lease(2)], config("vxlan"), node(1)).accepted, node(1))
    objects = (*state.fdb, *state.neighbours, *state.routes)
    ops = peer_ops(objects, ())
    assert {op.action for op in ops} == {DELETE} and all(op.priority == 0 for op in ops)
    assert peer_ops(objects, objects) == []
