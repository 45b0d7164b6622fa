"""The host-gw backend against a real kernel: plain routes via the peers' public IPs."""

from __future__ import annotations

import pytest

from backend_service import validate
from flannel_testkit.wait import wait_until

from .conftest import TwoNodes
from .factory import config
from .kernelnode import node_pair

pytestmark = pytest.mark.netns


async def test_pods_reach_each_other_over_host_gw(two_nodes: TwoNodes) -> None:
    a_ns, b_ns = two_nodes.a, two_nodes.b
    async with node_pair(a_ns.name, b_ns.name, config("host-gw")) as (a, b):
        assert (
            " ".join(a_ns.ip("route", "show", "proto", "70").split())
            == "10.244.2.0/24 via 192.168.77.2 dev eth0"
        )
        assert "flannel" not in a_ns.ip("link")
        assert a.setup_result is not None and a.setup_result.device == "" and a.setup_result.mtu == 1500
        assert wait_until(lambda: a_ns.ping("10.244.2.1", src="10.244.1.1"), timeout=5)
        assert wait_until(lambda: b_ns.ping("10.244.1.1", src="10.244.2.1"), timeout=5)
        again = await a.reconcile([a.lease(), b.lease()])
        assert again.ops == () and [p.mode for p in again.peers] == ["host-gw"]


async def test_a_peer_not_directly_connected_is_rejected_and_the_others_programmed(
    two_nodes: TwoNodes,
) -> None:
    a_ns = two_nodes.a
    async with node_pair(a_ns.name, two_nodes.b.name, config("host-gw")) as (a, b):
        far = b.lease()
        far.key, far.node_name, far.subnet, far.public_ip = "far", "far", "10.244.3.0/24", "172.16.5.5"
        report = await a.reconcile([a.lease(), b.lease(), far])
        assert [(r.reason, r.lease.node_name) for r in report.rejected] == [
            (validate.NOT_DIRECTLY_CONNECTED, "far")
        ]
        assert report.ops == ()
        assert "10.244.3.0/24" not in a_ns.ip("route")
