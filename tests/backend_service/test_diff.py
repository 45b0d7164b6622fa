"""The diff changes only the difference: nothing when equal, replace for changed, delete for stale."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from backend_service.desired import DesiredState, FdbEntry, Neighbour, Route
from backend_service.kernel.diff import diff
from backend_service.kernel.model import DELETE, REPLACE, KernelRoute, KernelState, Op


def route(n: int, via: str | None = None, dev: str = "flannel.1") -> Route:
    return Route(ip_network(f"10.244.{n}.0/24"), ip_address(via or f"10.244.{n}.0"), dev, onlink=via is None)


def neigh(n: int, mac: str | None = None) -> Neighbour:
    return Neighbour("flannel.1", ip_address(f"10.244.{n}.0"), mac or f"02:00:00:00:00:{n:02x}")


def fdb(n: int, dst: str | None = None) -> FdbEntry:
    return FdbEntry("flannel.1", f"02:00:00:00:00:{n:02x}", ip_address(dst or f"192.168.77.{n}"))


def desired(*ns: int) -> DesiredState:
    return DesiredState(
        frozenset(route(n) for n in ns), frozenset(neigh(n) for n in ns), frozenset(fdb(n) for n in ns)
    )


def kernel(*ns: int) -> KernelState:
    return KernelState(
        tuple(KernelRoute(route(n)) for n in ns),
        frozenset(neigh(n) for n in ns),
        frozenset(fdb(n) for n in ns),
    )


def test_equal_state_needs_no_operation() -> None:
    assert diff(desired(2, 3), kernel(2, 3)) == []
    assert diff(DesiredState(), KernelState()) == []


def test_missing_objects_are_written_fdb_and_neighbour_before_route() -> None:
    ops = diff(desired(2), KernelState())
    assert ops == [Op(REPLACE, fdb(2)), Op(REPLACE, neigh(2)), Op(REPLACE, route(2))]


def test_stale_objects_are_deleted_route_first() -> None:
    ops = diff(DesiredState(), kernel(4))
    assert ops == [Op(DELETE, route(4)), Op(DELETE, neigh(4)), Op(DELETE, fdb(4))]


def test_additions_come_before_deletions() -> None:
    ops = diff(desired(2), kernel(3))
    assert [op.action for op in ops] == [REPLACE, REPLACE, REPLACE, DELETE, DELETE, DELETE]


def test_not_synced_writes_but_deletes_nothing() -> None:
    changed = KernelState(
        (KernelRoute(route(2, via="192.168.77.9", dev="eth0")),), frozenset({neigh(2, "02:ff:ff:ff:ff:ff")})
    )
    ops = diff(
        desired(2),
        KernelState(changed.routes + kernel(4).routes, changed.neighbours | kernel(4).neighbours),
        delete=False,
    )
    assert {op.action for op in ops} == {REPLACE}
    assert Op(REPLACE, route(2)) in ops and Op(REPLACE, neigh(2)) in ops and Op(REPLACE, fdb(2)) in ops


def test_changed_objects_are_replaced_never_deleted_and_re_added() -> None:
    current = KernelState(
        (KernelRoute(route(2, via="192.168.77.2", dev="eth0")),),
        frozenset({neigh(2, "02:aa:aa:aa:aa:aa")}),
        frozenset({fdb(2, "192.168.77.99")}),
    )
    ops = diff(desired(2), current)
    assert ops == [Op(REPLACE, fdb(2)), Op(REPLACE, neigh(2)), Op(REPLACE, route(2))]


def test_a_route_with_another_protocol_is_rewritten_as_ours() -> None:
    current = KernelState((KernelRoute(route(2), proto=3),), frozenset({neigh(2)}), frozenset({fdb(2)}))
    assert diff(desired(2), current) == [Op(REPLACE, route(2))]


def test_duplicate_route_with_another_metric_is_removed() -> None:
    current = KernelState(
        (KernelRoute(route(2)), KernelRoute(route(2), priority=100)),
        frozenset({neigh(2)}),
        frozenset({fdb(2)}),
    )
    assert diff(desired(2), current) == [Op(DELETE, route(2), priority=100)]
    assert diff(desired(2), current, delete=False) == []


def test_only_a_metric_route_left_gets_ours_added_and_the_other_deleted() -> None:
    current = KernelState((KernelRoute(route(2), priority=100),), frozenset({neigh(2)}), frozenset({fdb(2)}))
    assert diff(desired(2), current) == [Op(REPLACE, route(2)), Op(DELETE, route(2), priority=100)]


def test_a_second_fdb_destination_for_a_wanted_mac_is_deleted() -> None:
    current = KernelState(
        kernel(2).routes, kernel(2).neighbours, frozenset({fdb(2), fdb(2, "192.168.77.50")})
    )
    assert diff(desired(2), current) == [Op(DELETE, fdb(2, "192.168.77.50"))]


def test_ipv4_and_ipv6_routes_diff_together() -> None:
    v6 = Route(ip_network("fd00:10:0:2::/64"), ip_address("fd00:10:0:2::"), "flannel-v6.1", onlink=True)
    want = DesiredState(frozenset({route(2), v6}))
    ops = diff(want, KernelState())
    assert {op.obj for op in ops} == {route(2), v6}


def test_ipv6_routes_carry_the_kernels_default_metric_1024() -> None:
    v6 = Route(ip_network("fd00:10:0:2::/64"), ip_address("fd00:10:0:2::"), "flannel-v6.1", onlink=True)
    assert diff(DesiredState(frozenset({v6})), KernelState((KernelRoute(v6, priority=1024),))) == []
    assert diff(DesiredState(), KernelState((KernelRoute(v6, priority=1024),))) == [
        Op(DELETE, v6, priority=1024)
    ]
