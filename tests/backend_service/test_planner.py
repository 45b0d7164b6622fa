"""One planner: a delta is a plan over a subset of the peers, with the ops, rejections and identities a
full plan would have."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping

import pytest

from backend_service.config import NetworkConfig
from backend_service.desired import FdbEntry, Neighbour
from backend_service.kernel.model import DELETE, REPLACE, identity
from backend_service.node import LocalNode
from backend_service.planner import Plan, Planner, Verdict
from backend_service.validate import check_one
from proto.flannel.v1 import lease_pb2

from .factory import config, held, held_changes, lease, node
from .fakes import FakeKernel, FakeVxlan

Leases = dict[str, lease_pb2.Lease]


async def synced(planner: Planner, kernel: FakeKernel, leases: Leases) -> Plan:
    """A full plan over ``leases``, applied to ``kernel`` and committed (deltas may follow)."""
    plan = planner.plan_full(held(*leases.values()), node(1), await kernel.read(()), synced=True)
    result = await kernel.apply(plan.ops)
    planner.commit(plan, result.ok)
    return plan


async def delta(planner: Planner, kernel: FakeKernel, changes: Mapping[str, lease_pb2.Lease | None]) -> Plan:
    plan = planner.plan_delta(held_changes(changes))
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
        held(lease(2), lease(3)), node(1), await FakeKernel().read(()), synced=True
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
        held(lease(2), bad), node(1), await FakeKernel().read(()), synced=True
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
    assert planner.plan_delta(held(same_mac)) is None and not planner.trusted


async def test_deltas_need_a_synced_and_wholly_applied_full_plan() -> None:
    planner, kernel = fresh()
    assert planner.plan_delta({}) is None
    plan = planner.plan_full(held(lease(2)), node(1), await kernel.read(()), synced=False)
    planner.commit(plan, True)
    assert planner.plan_delta({}) is None
    plan = planner.plan_full(held(lease(2)), node(1), await kernel.read(()), synced=True)
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
        plan = planner.plan_delta(held_changes(changes))
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
        check = planner.plan_full(held(*leases.values()), node(1), await kernel.read(()), synced=True)
        assert check.ops == ()
        planner.commit(check, True)


async def early(planner: Planner, kernel: FakeKernel, leases: list[lease_pb2.Lease]) -> Plan:
    """An early plan of ``leases``, applied to ``kernel`` and committed."""
    plan = planner.plan_early(held(*leases))
    assert plan is not None, "expected an early plan"
    result = await kernel.apply(plan.ops)
    planner.commit(plan, result.ok)
    return plan


async def before_synced(planner: Planner, kernel: FakeKernel) -> None:
    """The full plan a reconciler runs once it has a node, before the stream is synced (no leases yet)."""
    plan = planner.plan_full({}, node(1), await kernel.read(()), synced=False)
    planner.commit(plan, (await kernel.apply(plan.ops)).ok)


async def test_early_plans_add_a_snapshot_part_by_part_and_the_full_plan_at_synced_finds_it_done() -> None:
    planner, kernel = fresh()
    assert planner.plan_early(held(lease(2))) is None  # no ground yet: only a full plan before SYNCED sets it
    await before_synced(planner, kernel)
    first = await early(planner, kernel, [lease(2), lease(3)])
    second = await early(planner, kernel, [lease(4)])
    assert {op.action for op in first.ops + second.ops} == {REPLACE} and len(first.ops + second.ops) == 9
    assert not first.deletes and not planner.trusted
    assert planner.modes == {lease(n).key: "vxlan" for n in (2, 3, 4)}
    leases = [lease(2), lease(3), lease(4)]
    reference, clean = fresh()
    await synced(reference, clean, {msg.key: msg for msg in leases})
    assert kernel.objects == clean.objects
    final = planner.plan_full(held(*leases), node(1), await kernel.read(()), synced=True)
    assert final.ops == () and planner.plan_early(held(lease(5))) is None  # synced: early plans are over


async def test_early_plans_over_a_programmed_kernel_change_nothing_and_delete_nothing() -> None:
    planner, kernel = fresh()
    await synced(planner, kernel, {lease(n).key: lease(n) for n in (2, 3)})
    before = dict(kernel.objects)
    restarted = Planner(config("vxlan"), FakeVxlan())  # a backend restart: the kernel keeps its state
    await before_synced(restarted, kernel)
    moved = lease(2, backend_data='{"VNI": 1, "VtepMAC": "0a:00:00:00:00:99"}')  # changed while we were away
    plan = await early(restarted, kernel, [moved, lease(4)])
    # lease 4 is new: added; lease 2's neighbour is held (with the old MAC): left for the full plan,
    # only its FDB entry, keyed by the new MAC, is new; lease 3 (absent so far) is not deleted
    assert {op.action for op in plan.ops} == {REPLACE}
    assert [type(op.obj).__name__ for op in plan.ops] == ["FdbEntry", "FdbEntry", "Neighbour", "Route"]
    assert all(kernel.objects[key] == obj for key, obj in before.items())


async def test_a_subnet_an_early_plan_gave_away_waits_for_the_full_plan() -> None:
    planner, kernel = fresh()
    await before_synced(planner, kernel)
    twin = lease(2, key="0-twin", public_ip="192.168.77.20")  # the smaller key: it wins in the full plan
    await early(planner, kernel, [lease(2)])
    plan = await early(planner, kernel, [twin])
    assert plan.ops == () and plan.peers == ()
    final = planner.plan_full(held(lease(2), twin), node(1), await kernel.read(()), synced=True)
    planner.commit(final, (await kernel.apply(final.ops)).ok)
    assert [(r.lease.key, r.reason) for r in final.rejected] == [(lease(2).key, "OVERLAPS_LEASE")]
    assert {str(obj.dst) for obj in kernel.objects.values() if isinstance(obj, FdbEntry)} == {"192.168.77.20"}


async def test_a_lease_is_validated_once_until_it_or_the_node_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []

    def counting(msg: bytes, cfg: NetworkConfig, me: LocalNode) -> Verdict:
        checked.append(lease_pb2.Lease.FromString(msg).key)
        return check_one(msg, cfg, me)

    monkeypatch.setattr("backend_service.planner.check_one", counting)
    planner, kernel = fresh()
    await before_synced(planner, kernel)
    await early(planner, kernel, [lease(2), lease(3)])
    await synced(planner, kernel, {lease(n).key: lease(n) for n in (2, 3, 4)})
    assert sorted(checked) == [lease(2).key, lease(3).key, lease(4).key]
    checked.clear()
    moved = lease(3, backend_data='{"VNI": 1, "VtepMAC": "0a:00:00:00:00:99"}')
    await synced(planner, kernel, {lease(2).key: lease(2), moved.key: moved, lease(4).key: lease(4)})
    assert checked == [moved.key]
    checked.clear()
    kernel.connected = ()  # the node's connected networks changed (host-gw's verdicts depend on them)
    planner.plan_full(held(lease(2)), node(1), await kernel.read(()), synced=True)
    assert checked == [lease(2).key]


def _phases(plan: Plan) -> list[tuple[str, str]]:
    """The plan's ops as their order of kinds (FDB/neighbour writes, routes, deletes ...), runs collapsed."""
    out: list[tuple[str, str]] = []
    for op in plan.ops:
        kind = (op.action, type(op.obj).__name__)
        if not out or out[-1] != kind:
            out.append(kind)
    return out


@pytest.mark.parametrize("synced_", [True, False])
async def test_a_read_that_leaves_out_what_the_plan_expects_plans_exactly_what_a_whole_read_plans(
    synced_: bool,
) -> None:
    rng = random.Random(14)
    for _ in range(60):
        kernel = FakeKernel()
        before = {lease(n).key: lease(n) for n in rng.sample(range(2, 14), rng.randint(0, 8))}
        await synced(Planner(config("vxlan"), FakeVxlan()), kernel, before)
        for obj in list(kernel.objects.values()):  # drift: objects lost, and others changed by hand
            if rng.random() < 0.1:
                kernel.remove(obj)
            elif rng.random() < 0.1 and isinstance(obj, Neighbour):
                kernel.objects[identity(obj)] = dataclasses.replace(obj, lladdr="0a:00:00:00:00:77")
        leases = {lease(n).key: lease(n) for n in rng.sample(range(2, 14), rng.randint(0, 8))}
        if rng.random() < 0.3:
            twin = lease(3, key="0-twin", public_ip="192.168.77.30")
            leases[twin.key] = twin
        # what the planner expected before the read: the leases as they were a moment earlier
        earlier = dict(leases)
        for key in rng.sample(sorted(earlier), min(len(earlier), rng.randint(0, 2))):
            del earlier[key]
        for n in rng.sample(range(2, 16), rng.randint(0, 2)):  # gone since, perhaps held by the kernel
            earlier.setdefault(lease(n).key, lease(n))
        whole, filtered = fresh()[0], fresh()[0]
        reference = whole.plan_full(held(*leases.values()), node(1), await kernel.read(()), synced=synced_)
        expect = filtered.expect(held(*earlier.values()), node(1), kernel.connected, synced=synced_)
        snapshot = await kernel.read((), expect)
        if synced_:
            assert len(snapshot.state.neighbours) + len(snapshot.state.fdb) + len(
                snapshot.state.routes
            ) <= len(kernel.objects)
        plan = filtered.plan_full(held(*leases.values()), node(1), snapshot, synced=synced_, expect=expect)
        if synced_ or earlier == leases:
            assert Counter(plan.ops) == Counter(reference.ops)
            assert _phases(plan) == _phases(reference)
        else:  # before SYNCED the leases never change during a read; if they did, a peer the expectation
            # did not cover is written again (a replace with what the kernel may hold): never a delete
            assert set(reference.ops) <= set(plan.ops) and {op.action for op in plan.ops} <= {REPLACE}
        assert plan.peers == reference.peers and plan.rejected == reference.rejected
        if not synced_:
            assert filtered.plan_early(held(lease(16))) == whole.plan_early(held(lease(16)))
