"""One planner: a delta is a plan over a subset of the peers, with the ops, rejections and identities a
full plan would have."""

from __future__ import annotations

import random
from collections.abc import Mapping

from backend_service.desired import FdbEntry
from backend_service.kernel.model import DELETE, REPLACE
from backend_service.planner import Plan, Planner
from proto.flannel.v1 import lease_pb2

from .factory import config, lease, node
from .fakes import FakeKernel, FakeVxlan

Leases = dict[str, lease_pb2.Lease]


async def synced(planner: Planner, kernel: FakeKernel, leases: Leases) -> Plan:
    """A full plan over ``leases``, applied to ``kernel`` and committed (deltas may follow)."""
    plan = planner.plan_full(leases.values(), node(1), await kernel.read(()), synced=True)
    result = await kernel.apply(plan.ops)
    planner.commit(plan, result.ok)
    return plan


async def delta(planner: Planner, kernel: FakeKernel, changes: Mapping[str, lease_pb2.Lease | None]) -> Plan:
    plan = planner.plan_delta(changes)
    assert plan is not None, "expected a delta plan"
    result = await kernel.apply(plan.ops)
    planner.commit(plan, result.ok)
    return plan


def fresh() -> tuple[Planner, FakeKernel]:
    return Planner(config("vxlan"), FakeVxlan()), FakeKernel()


async def test_an_added_peer_gets_exactly_what_a_full_plan_writes_and_a_removed_one_loses_it() -> None:
    planner, kernel = fresh()
    leases = {lease(2).key: lease(2)}
    await synced(planner, kernel, leases)
    added = await delta(planner, kernel, {lease(3).key: lease(3)})
    full_planner, _ = fresh()
    reference = full_planner.plan_full(
        [lease(2), lease(3)], node(1), await FakeKernel().read(()), synced=True
    )
    assert {op.action for op in added.ops} == {REPLACE} and len(added.ops) == 3
    assert [type(op.obj).__name__ for op in added.ops] == ["FdbEntry", "Neighbour", "Route"]
    assert set(added.ops) < set(reference.ops)
    assert added.scope == {lease(3).key} and [p.peer.key for p in added.peers] == [lease(3).key]
    removed = await delta(planner, kernel, {lease(3).key: None})
    assert [(op.action, type(op.obj).__name__) for op in removed.ops] == [
        (DELETE, "Route"),
        (DELETE, "Neighbour"),
        (DELETE, "FdbEntry"),
    ]
    assert planner.modes == {lease(2).key: "vxlan"}


async def test_an_unchanged_lease_costs_nothing_and_a_new_vtep_mac_leaves_the_route_alone() -> None:
    planner, kernel = fresh()
    await synced(planner, kernel, {lease(2).key: lease(2)})
    assert (await delta(planner, kernel, {lease(2).key: lease(2)})).ops == ()
    moved = lease(2, backend_data='{"VNI": 1, "VtepMAC": "0a:00:00:00:00:99"}')
    ops = (await delta(planner, kernel, {moved.key: moved})).ops
    # the neighbour is rewritten in place; the FDB entry is keyed by MAC: the new one in, the old one out
    assert [(op.action, type(op.obj).__name__) for op in ops] == [
        (REPLACE, "FdbEntry"),
        (REPLACE, "Neighbour"),
        (DELETE, "FdbEntry"),
    ]


async def test_a_delta_rejects_with_the_reason_and_words_of_a_full_plan() -> None:
    planner, kernel = fresh()
    await synced(planner, kernel, {lease(2).key: lease(2)})
    bad = lease(4, backend="host-gw")
    plan = await delta(planner, kernel, {bad.key: bad})
    full = Planner(config("vxlan"), FakeVxlan()).plan_full(
        [lease(2), bad], node(1), await FakeKernel().read(()), synced=True
    )
    assert plan.ops == () and plan.rejected == full.rejected
    assert planner.rejected[bad.key].reason == "BACKEND_MISMATCH"
    assert (await delta(planner, kernel, {bad.key: None})).rejected == () and bad.key not in planner.rejected


async def test_overlaps_are_decided_by_key_in_a_delta_as_in_a_full_plan() -> None:
    planner, kernel = fresh()
    await synced(planner, kernel, {lease(2).key: lease(2)})
    # a smaller key for the same subnet, another public IP: it wins, lease 2 is now the overlap
    twin = lease(2, key="0-twin", public_ip="192.168.77.20")
    plan = await delta(planner, kernel, {twin.key: twin})
    assert plan.scope == {twin.key, lease(2).key}
    assert [p.peer.key for p in plan.peers] == [twin.key]
    assert [(r.lease.key, r.reason) for r in plan.rejected] == [(lease(2).key, "OVERLAPS_LEASE")]
    assert {str(obj.dst) for obj in kernel.objects.values() if isinstance(obj, FdbEntry)} == {"192.168.77.20"}
    # the winner goes: the other lease is accepted again
    await delta(planner, kernel, {twin.key: None})
    assert planner.modes == {lease(2).key: "vxlan"} and planner.rejected == {}
    assert {str(obj.dst) for obj in kernel.objects.values() if isinstance(obj, FdbEntry)} == {"192.168.77.2"}


async def test_the_own_lease_in_a_delta_is_skipped_as_in_a_full_plan() -> None:
    planner, kernel = fresh()
    await synced(planner, kernel, {lease(1).key: lease(1), lease(2).key: lease(2)})
    plan = await delta(planner, kernel, {lease(1).key: lease(1)})
    assert plan.ops == () and plan.peers == () and plan.rejected == ()


async def test_a_delta_whose_objects_another_peer_holds_asks_for_a_full_plan() -> None:
    planner, kernel = fresh()
    await synced(planner, kernel, {lease(2).key: lease(2)})
    same_mac = lease(3, backend_data=lease(2).backend_data)
    assert planner.plan_delta({same_mac.key: same_mac}) is None and not planner.trusted


async def test_deltas_need_a_synced_and_wholly_applied_full_plan() -> None:
    planner, kernel = fresh()
    assert planner.plan_delta({}) is None
    plan = planner.plan_full([lease(2)], node(1), await kernel.read(()), synced=False)
    planner.commit(plan, True)
    assert planner.plan_delta({}) is None
    plan = planner.plan_full([lease(2)], node(1), await kernel.read(()), synced=True)
    planner.commit(plan, False)
    assert planner.plan_delta({}) is None
    await synced(planner, kernel, {lease(2).key: lease(2)})
    assert planner.plan_delta({}) is not None


async def test_random_deltas_leave_the_kernel_exactly_as_a_full_plan_would() -> None:
    rng = random.Random(7)
    planner, kernel = fresh()
    leases: Leases = {}
    await synced(planner, kernel, leases)
    for _ in range(200):
        changes: dict[str, lease_pb2.Lease | None] = {}
        for _ in range(rng.randint(1, 4)):
            n = rng.randint(2, 12)
            choice = rng.random()
            if choice < 0.4:
                msg = lease(n)
            elif choice < 0.55:
                msg = lease(n, key=f"{n}-alias", public_ip=f"192.168.77.{100 + n}")  # an overlap
            elif choice < 0.65:
                msg = lease(n, backend_data='{"VNI": 2, "VtepMAC": "0a:00:00:00:00:01"}')  # rejected
            elif choice < 0.75:
                msg = lease(n, backend_data=f'{{"VNI": 1, "VtepMAC": "0a:00:00:00:01:{n:02x}"}}')  # a new MAC
            else:
                key = rng.choice([*leases, lease(n).key])
                changes[key] = None
                leases.pop(key, None)
                continue
            changes[msg.key] = leases[msg.key] = msg
        plan = planner.plan_delta(changes)
        if plan is None:
            await synced(planner, kernel, leases)
        else:
            assert (await kernel.apply(plan.ops)).ok
            planner.commit(plan, True)
        reference, clean = fresh()
        expected = await synced(reference, clean, leases)
        assert kernel.objects == clean.objects
        assert planner.modes == reference.modes
        assert {k: (r.reason, r.message) for k, r in planner.rejected.items()} == {
            r.lease.key: (r.reason, r.message) for r in expected.rejected
        }
        # and a full plan now finds nothing to do
        check = planner.plan_full(leases.values(), node(1), await kernel.read(()), synced=True)
        assert check.ops == ()
        planner.commit(check, True)
