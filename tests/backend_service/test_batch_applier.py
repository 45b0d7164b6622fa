"""The ip/bridge -batch applier programs exactly what the pyroute2 applier does, and maps failures back."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest
from pyroute2 import AsyncIPRoute

from backend_service.dataplane import Dataplane
from backend_service.desired import Neighbour, Route
from backend_service.diff import ADD, DELETE, Op
from backend_service.kernel import IpBatchApplier, PyrouteApplier
from tests.support.wait import wait_until

from .conftest import TwoNodes
from .factory import config
from .kernelnode import node_pair

pytestmark = pytest.mark.netns


async def test_batch_applier_programs_the_same_state(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with node_pair(ns.name, two_nodes.b.name, config("vxlan")) as (a, b):
        assert a.ipr is not None and a.backend is not None
        batch = Dataplane(a.ipr, a.config, a.backend, applier=IpBatchApplier(ns.exec_prefix))
        # Unprogram the peer, then program it again, both through ip/bridge -batch.
        gone = await batch.reconcile([a.lease()], a.local(), synced=True)
        assert gone.ok and len(gone.ops) == 3
        assert ns.ip("route", "show", "proto", "70") == ""
        back = await batch.reconcile([a.lease(), b.lease()], a.local(), synced=True)
        assert back.ok and len(back.ops) == 3
        assert wait_until(lambda: ns.ping("10.244.2.1", src="10.244.1.1"), timeout=5)
        # The pyroute2 path sees exactly its own state: nothing to do.
        assert (await a.reconcile([a.lease(), b.lease()])).ops == ()


async def test_batch_applier_reports_the_failing_op_and_applies_the_rest(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    bad = Op(ADD, Route(ip_network("10.244.5.0/24"), ip_address("192.168.77.5"), "nosuch0"))
    good = Op(ADD, Route(ip_network("10.244.6.0/24"), ip_address("192.168.77.6"), "eth0"))
    gone = Op(DELETE, Route(ip_network("10.244.7.0/24"), ip_address("192.168.77.7"), "eth0"))
    gone_neigh = Op(DELETE, Neighbour("eth0", ip_address("192.168.77.99"), "02:00:00:00:00:99"))
    bad_neigh = Op(ADD, Neighbour("nosuch0", ip_address("192.168.77.98"), "02:00:00:00:00:98"))
    good_neigh = Op(ADD, Neighbour("eth0", ip_address("192.168.77.97"), "02:00:00:00:00:97"))
    async with AsyncIPRoute(netns=ns.name) as ipr:
        applier = IpBatchApplier(ns.exec_prefix, fallback=PyrouteApplier(ipr))
        result = await applier.apply([bad_neigh, good_neigh, bad, good, gone, gone_neigh])
    assert [f.op for f in result.failures] == [bad_neigh, bad]
    assert all("nosuch0" in f.error for f in result.failures)
    assert result.applied == 4
    assert "10.244.6.0/24 via 192.168.77.6 dev eth0 proto 70" in ns.ip("route")
    assert "192.168.77.97 lladdr 02:00:00:00:00:97 PERMANENT" in ns.ip("neigh", "show", "dev", "eth0")
