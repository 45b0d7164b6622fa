"""The vxlan backend against a real kernel: two node namespaces, real VXLAN, real pings."""

from __future__ import annotations

import dataclasses
import json
from ipaddress import IPv4Network, ip_address, ip_network

import pytest

from backend_service.desired import Route
from backend_service.kernel.apply import NetlinkKernel
from backend_service.kernel.model import REPLACE, Op
from backend_service.vxlan.backend import VxlanBackend
from backend_service.vxlan.device import vtep_mac
from flannel_testkit.wait import wait_until

from .conftest import TwoNodes
from .factory import config
from .kernelnode import node_pair, started

pytestmark = pytest.mark.netns


def pings(ns, dst: str, src: str) -> bool:
    return bool(wait_until(lambda: ns.ping(dst, src=src), timeout=5, what=f"ping {src} -> {dst}"))


async def test_pods_reach_each_other_over_vxlan(two_nodes: TwoNodes) -> None:
    a_ns, b_ns = two_nodes.a, two_nodes.b
    async with node_pair(a_ns.name, b_ns.name, config("vxlan")) as (a, b):
        assert pings(a_ns, "10.244.2.1", src="10.244.1.1")
        assert pings(b_ns, "10.244.1.1", src="10.244.2.1")

        link = a_ns.ip("-d", "link", "show", "flannel.1")
        for expected in (
            "vxlan id 1 ",
            "local 192.168.77.1 ",
            "dev eth0 ",
            "dstport 8472 ",
            "nolearning",
            "mtu 1450",
        ):
            assert expected in link, link
        assert "gbp" not in link
        assert "inet 10.244.1.0/32" in a_ns.ip("addr", "show", "dev", "flannel.1")
        b_mac = json.loads(b.lease().backend_data)["VtepMAC"]
        assert json.loads(b.lease().backend_data) == {"VNI": 1, "VtepMAC": b_mac}
        assert a_ns.ip("route", "show", "proto", "70").split() == (
            ["10.244.2.0/24", "via", "10.244.2.0", "dev", "flannel.1", "onlink"]
        )
        assert (
            a_ns.ip("neigh", "show", "dev", "flannel.1").split()
            == f"10.244.2.0 lladdr {b_mac} PERMANENT".split()
        )
        fdb = a_ns.run(["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        assert f"{b_mac} dst 192.168.77.2 self permanent" in fdb
        assert (
            a.setup_result is not None and a.setup_result.mtu == 1450 and a.setup_result.device == "flannel.1"
        )


async def test_reconciling_the_same_state_again_changes_nothing(two_nodes: TwoNodes) -> None:
    async with node_pair(two_nodes.a.name, two_nodes.b.name, config("vxlan")) as (a, b):
        report = await a.reconcile([a.lease(), b.lease()])
        assert report.ops == ()
        assert [(p.peer.node_name, p.mode) for p in report.peers] == [("node-2", "vxlan")]


async def test_reconcile_removes_stale_objects_we_own_and_leaves_others_alone(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with node_pair(two_nodes.a.name, two_nodes.b.name, config("vxlan")) as (a, b):
        # Left over from a peer that is gone: ours by device, and ours by protocol.
        ns.ip("route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "flannel.1", "onlink")
        ns.ip(
            "neigh",
            "add",
            "10.244.9.0",
            "lladdr",
            "02:99:99:99:99:99",
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        )
        ns.run(
            [
                "bridge",
                "fdb",
                "add",
                "02:99:99:99:99:99",
                "dev",
                "flannel.1",
                "dst",
                "192.168.77.9",
                "self",
                "permanent",
            ]
        )
        ns.ip("route", "add", "10.244.8.0/24", "via", "192.168.77.8", "dev", "eth0", "proto", "70")
        # Somebody else's route, not on our device and not our protocol.
        ns.ip("route", "add", "10.244.7.0/24", "via", "192.168.77.7", "dev", "eth0", "proto", "static")

        before_sync = await a.reconcile([a.lease(), b.lease()], synced=False)
        assert before_sync.ops == ()  # before SYNCED nothing is deleted
        assert "10.244.9.0/24" in ns.ip("route")

        report = await a.reconcile([a.lease(), b.lease()])
        assert report.ok
        assert sorted(str(op) for op in report.ops) == sorted(
            [
                "delete route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink",
                "delete route 10.244.8.0/24 via 192.168.77.8 dev eth0",
                "delete neigh 10.244.9.0 lladdr 02:99:99:99:99:99 dev flannel.1",
                "delete fdb 02:99:99:99:99:99 dev flannel.1 dst 192.168.77.9",
            ]
        )
        routes = ns.ip("route")
        assert "10.244.9.0/24" not in routes and "10.244.8.0/24" not in routes
        assert "10.244.7.0/24 via 192.168.77.7 dev eth0 proto static" in routes
        assert "10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 70 onlink" in routes
        assert "02:99:99:99:99:99" not in ns.run(["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        assert "10.244.9.0" not in ns.ip("neigh", "show", "dev", "flannel.1")
        assert pings(ns, "10.244.2.1", src="10.244.1.1")


async def test_a_removed_peer_is_unprogrammed_after_sync(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with node_pair(two_nodes.a.name, two_nodes.b.name, config("vxlan")) as (a, _b):
        report = await a.reconcile([a.lease()])
        assert len(report.ops) == 3 and report.ok
        assert ns.ip("route", "show", "proto", "70") == ""
        assert ns.ip("neigh", "show", "dev", "flannel.1") == ""


async def test_a_changed_peer_is_replaced_in_place(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with node_pair(two_nodes.a.name, two_nodes.b.name, config("vxlan")) as (a, b):
        moved = b.lease()
        moved.public_ip = "192.168.77.3"
        report = await a.reconcile([a.lease(), moved])
        assert [op.action for op in report.ops] == ["replace"]
        assert (
            "dst 192.168.77.3 self permanent" in ns.run(["bridge", "fdb", "show", "dev", "flannel.1"]).stdout
        )


async def test_vtep_mac_survives_a_restart_and_is_derived_identically_on_recreation(
    two_nodes: TwoNodes,
) -> None:
    ns = two_nodes.a
    async with started(ns.name, 1, config("vxlan")) as node:
        first = node.setup
        derived = vtep_mac(1, ip_address("192.168.77.1"))
        assert json.loads(first.backend_data) == {"VNI": 1, "VtepMAC": derived}
        ifindex = ns.ip("-o", "link", "show", "flannel.1").split(":")[0]

        # A restart: a new backend object finds the device and reuses it, index and MAC unchanged.
        assert node.backend is not None and isinstance(node.backend, VxlanBackend)
        again = await VxlanBackend(node.ipr, node.config, node.backend.public).setup()
        assert again == first
        assert ns.ip("-o", "link", "show", "flannel.1").split(":")[0] == ifindex

        # A matching device keeps whatever MAC it has: never delete/recreate a device that matches.
        ns.ip("link", "set", "flannel.1", "address", "02:12:34:56:78:9a")
        kept = await VxlanBackend(node.ipr, node.config, node.backend.public).setup()
        assert json.loads(kept.backend_data)["VtepMAC"] == "02:12:34:56:78:9a"

        # Deleted: re-created with the derived MAC again.
        ns.ip("link", "del", "flannel.1")
        recreated = await VxlanBackend(node.ipr, node.config, node.backend.public).setup()
        assert recreated == first

        # Incompatible (wrong port): re-created, same derived MAC.
        ns.ip("link", "del", "flannel.1")
        ns.ip(
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "4789",
            "local",
            "192.168.77.1",
            "dev",
            "eth0",
        )
        fixed = await VxlanBackend(node.ipr, node.config, node.backend.public).setup()
        assert fixed == first
        assert "dstport 8472" in ns.ip("-d", "link", "show", "flannel.1")


async def test_options_reach_the_device(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with started(
        ns.name, 1, config("vxlan", VNI=7, Port=4789, GBP=True, Learning=True, MTU=1300)
    ) as node:
        setup = node.setup
        # MTU is the underlay's, as in flannel: the device and the pods get 50 bytes less
        assert setup.device == "flannel.7" and setup.mtu == 1250
        assert json.loads(setup.backend_data)["VNI"] == 7
        link = ns.ip("-d", "link", "show", "flannel.7")
        for expected in ("vxlan id 7 ", "dstport 4789 ", "gbp", "mtu 1250"):
            assert expected in link, link
        assert "nolearning" not in link


async def test_direct_routing_skips_encapsulation_for_peers_on_our_l2_network(two_nodes: TwoNodes) -> None:
    a_ns = two_nodes.a
    async with node_pair(two_nodes.a.name, two_nodes.b.name, config("vxlan", DirectRouting=True)) as (a, b):
        assert (
            " ".join(a_ns.ip("route", "show", "proto", "70").split())
            == "10.244.2.0/24 via 192.168.77.2 dev eth0"
        )
        assert a_ns.ip("neigh", "show", "dev", "flannel.1") == ""
        report = await a.reconcile([a.lease(), b.lease()])
        assert report.ops == () and [p.mode for p in report.peers] == ["direct"]
        assert pings(a_ns, "10.244.2.1", src="10.244.1.1")
        assert pings(two_nodes.b, "10.244.1.1", src="10.244.2.1")


async def test_dual_stack_pods_reach_each_other_over_both_devices(two_nodes: TwoNodes) -> None:
    a_ns = two_nodes.a
    async with node_pair(two_nodes.a.name, two_nodes.b.name, config("vxlan", ipv6=True)) as (a, b):
        assert a.setup_result is not None and a.setup_result.backend_v6_data
        link6 = a_ns.ip("-d", "link", "show", "flannel-v6.1")
        assert "local fd77::1 " in link6 and "mtu 1430" in link6
        assert pings(a_ns, "10.244.2.1", src="10.244.1.1")
        assert pings(a_ns, "fd00:10:0:2::1", src="fd00:10:0:1::1")
        assert "fd00:10:0:2::/64 via fd00:10:0:2:: dev flannel-v6.1 proto 70" in a_ns.ip("-6", "route")
        assert (await a.reconcile([a.lease(), b.lease()])).ops == ()


async def test_a_failing_operation_does_not_stop_the_others(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with started(ns.name, 1, config("vxlan")) as node:
        assert node.ipr is not None
        bad = Op(REPLACE, Route(ip_network("10.244.5.0/24"), ip_address("192.168.77.5"), "nosuch0"))
        good = Op(REPLACE, Route(ip_network("10.244.6.0/24"), ip_address("192.168.77.6"), "eth0"))
        result = await NetlinkKernel(node.ipr).apply([bad, good])
        assert result.applied == 1
        assert [f.op for f in result.failures] == [bad]
        assert "nosuch0" in result.failures[0].error
        assert "10.244.6.0/24 via 192.168.77.6 dev eth0 proto 70" in ns.ip("route")


async def test_a_new_own_subnet_replaces_the_device_address(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with started(ns.name, 1, config("vxlan")) as node:
        assert node.backend is not None
        await node.backend.configure(node.local())
        assert "inet 10.244.1.0/32" in ns.ip("addr", "show", "dev", "flannel.1")
        moved = dataclasses.replace(node.local(), subnet=IPv4Network("10.244.42.0/24"))
        await node.backend.configure(moved)
        addrs = ns.ip("addr", "show", "dev", "flannel.1")
        assert "inet 10.244.42.0/32" in addrs and "10.244.1.0" not in addrs
