"""The whole node, end to end: real etcd, the real lease service and backend as separate
unprivileged processes in node namespaces, pods behind cni0, and real packets across VXLAN,
host-gw and direct routes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from flannel_testkit.cluster import (
    Cluster,
    EchoServer,
    caps,
    ip,
    ip_json,
    kernel_objects,
    pinging_without_loss,
    tcp_echo,
)
from flannel_testkit.grpcurl import grpcurl
from flannel_testkit.processes import health_status
from flannel_testkit.wait import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

MakeCluster = Callable[..., Cluster]


def all_kernel_objects(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {node.name: kernel_objects(node.ns) for node in cluster.nodes}


def assert_full_mesh(cluster: Cluster, count: int = 5) -> None:
    results = cluster.full_mesh_pings(count)
    lossy = {
        pair: (r.sent, r.received) for pair, r in results.items() if r.sent != count or r.received != count
    }
    assert not lossy, f"(from, to): (sent, received) {lossy}"


def test_every_pod_pings_every_other_pod_and_tcp_echoes_across_nodes_over_vxlan(
    vxlan_cluster: Cluster,
) -> None:
    c = vxlan_cluster
    assert len({node.subnet for node in c.nodes}) == 3
    assert_full_mesh(c, count=5)
    with EchoServer(c.node(3).pod_ns, c.node(3).pod_ip, 7001):
        payload = b"x" * 100_000  # several full-MTU segments through the VXLAN device
        assert tcp_echo(c.node(1).pod_ns, c.node(3).pod_ip, 7001, payload) == payload
    for node in c.nodes:
        objects = kernel_objects(node.ns)
        peers = [other for other in c.nodes if other is not node]
        assert [link["name"] for link in objects["links"]] == ["flannel.1"]
        assert {r["dst"] for r in objects["routes"]} == {p.subnet for p in peers}
        assert {f["dst"] for f in objects["fdb"]} == {p.public_ip for p in peers}
        assert len(objects["neighbours"]) == 2
        assert any("MASQUERADE" in rule for rule in objects["rules"]), objects["rules"]


def test_the_backend_holds_only_net_admin_and_net_raw_and_the_lease_service_holds_nothing(
    vxlan_cluster: Cluster,
) -> None:
    for node in vxlan_cluster.nodes:
        backend, lease = caps(node.backend.pid), caps(node.lease.pid)
        assert backend == {
            "CapInh": "0000000000003000",
            "CapPrm": "0000000000003000",
            "CapEff": "0000000000003000",
            "CapBnd": "0000000000003000",
            "CapAmb": "0000000000003000",
            "NoNewPrivs": "1",
        }
        assert lease == {
            "CapInh": "0000000000000000",
            "CapPrm": "0000000000000000",
            "CapEff": "0000000000000000",
            "CapBnd": "0000000000000000",
            "CapAmb": "0000000000000000",
            "NoNewPrivs": "1",
        }


def test_ip_masq_rewrites_traffic_leaving_the_overlay_to_the_node_ip_but_not_pod_to_pod_traffic(
    vxlan_cluster: Cluster,
) -> None:
    c = vxlan_cluster
    n1, n2 = c.node(1), c.node(2)
    with EchoServer(c.etcd_ns, c.etcd_ip, 7002) as outside:
        assert tcp_echo(n1.pod_ns, c.etcd_ip, 7002, b"out\n") == b"out\n"
        assert outside.peers == [n1.public_ip]
    with EchoServer(n2.pod_ns, n2.pod_ip, 7003) as pod:
        assert tcp_echo(n1.pod_ns, n2.pod_ip, 7003, b"in\n") == b"in\n"
        assert pod.peers == [n1.pod_ip]


def test_leases_the_backend_refuses_are_reported_as_rejected_and_healthy_pods_keep_talking(
    vxlan_cluster: Cluster,
) -> None:
    c = vxlan_cluster
    used = {node.subnet.split(".")[2] for node in c.nodes}
    free = [n for n in range(250, 200, -1) if str(n) not in used][:3]
    vtep = {"VNI": 1, "VtepMAC": "0a:58:0a:f4:fa:01"}
    bad = {
        f"10.244.{free[0]}.0-24": (
            {"PublicIP": "10.244.9.9", "BackendType": "vxlan", "BackendData": vtep},
            "PUBLIC_IP_IN_OVERLAY",
        ),
        f"10.244.{free[1]}.0-24": (
            {"PublicIP": f"{c.underlay}.77", "BackendType": "host-gw"},
            "BACKEND_MISMATCH",
        ),
        f"10.244.{free[2]}.0-24": (
            {
                "PublicIP": f"{c.underlay}.78",
                "BackendType": "vxlan",
                "BackendData": {"VNI": 1, "VtepMAC": "not-a-mac"},
            },
            "BACKEND_DATA_MALFORMED",
        ),
    }
    before = all_kernel_objects(c)
    try:
        for key, (value, _) in bad.items():
            c.etcd_put(f"{c.prefix}/subnets/{key}", json.dumps(value))
        want = {key: reason for key, (_, reason) in bad.items()}
        for node in c.nodes:
            wait_until(partial(rejects, c, node, want), timeout=15, what=f"{node.name} rejecting {want}")
            for r in c.backend_status(node).rejected:
                assert r.message, f"no message for {r.lease.key}"
        shown = json.loads(grpcurl(c.node(1).backend_socket, "flannel.v1.BackendService/GetStatus").stdout)
        assert {r["lease"]["key"]: r["reason"] for r in shown["rejected"]} == want
        assert all_kernel_objects(c) == before
        assert_full_mesh(c, count=3)
        log = c.node(1).backend.log()  # three puts, three reconciles at least: still one line each
        for key, (_, reason) in bad.items():
            assert log.count(f"rejected lease {reason}: lease {key}") == 1, log[-2000:]
    finally:
        for key in bad:
            c.etcd_delete(f"{c.prefix}/subnets/{key}")
    for node in c.nodes:
        wait_until(partial(rejects, c, node, {}), timeout=15, what=f"{node.name} rejections cleared")


def test_stale_flannel_objects_left_in_the_kernel_are_removed_when_the_backend_starts(
    vxlan_cluster: Cluster,
) -> None:
    c = vxlan_cluster
    n1 = c.node(1)
    before = all_kernel_objects(c)
    n1.backend.kill()
    stale_mac = "02:00:00:00:fa:01"
    ip(
        n1.ns,
        "route",
        "add",
        "10.244.250.0/24",
        "via",
        "10.244.250.0",
        "dev",
        "flannel.1",
        "onlink",
        "proto",
        "70",
    )
    ip(n1.ns, "route", "add", "10.244.251.0/24", "via", f"{c.underlay}.99", "dev", "eth0", "proto", "70")
    ip(n1.ns, "neigh", "add", "10.244.250.0", "lladdr", stale_mac, "dev", "flannel.1", "nud", "permanent")
    ns_bridge = [
        "ip",
        "netns",
        "exec",
        n1.ns,
        "bridge",
        "fdb",
        "add",
        stale_mac,
        "dev",
        "flannel.1",
        "dst",
        f"{c.underlay}.99",
        "self",
        "permanent",
    ]
    subprocess.run(ns_bridge, check=True, capture_output=True)
    dirty = kernel_objects(n1.ns)
    assert {"10.244.250.0/24", "10.244.251.0/24"} <= {r["dst"] for r in dirty["routes"]}
    assert stale_mac in {f["mac"] for f in dirty["fdb"]}
    c.start_backend(n1)
    wait_until(lambda: kernel_objects(n1.ns) == before[n1.name], timeout=15, what="the stale objects removed")
    assert all_kernel_objects(c) == before
    assert_full_mesh(c, count=3)


@pytest.mark.parametrize("daemon", ["backend", "lease service"])
def test_a_daemon_killed_and_restarted_under_a_10ms_ping_loses_no_reply_and_changes_no_kernel_object(
    vxlan_cluster: Cluster, daemon: str
) -> None:
    c = vxlan_cluster
    n1, n2 = c.node(1), c.node(2)
    before = all_kernel_objects(c)
    with pinging_without_loss(n1.pod_ns, n2.pod_ip, count=1000):
        time.sleep(0.3)  # some replies before the kill
        if daemon == "backend":
            c.restart_backend(n1)
        else:
            c.restart_lease_service(n1)
            # the backend reconnects and resumes its stream; it keeps serving meanwhile
            assert health_status(n1.backend_socket) == "SERVING" and n1.backend.alive()
        mid = all_kernel_objects(c)
        assert_follows_the_store(c, n1)  # the restarted side is connected again and applies deltas
    assert mid == before
    assert all_kernel_objects(c) == before
    assert n1.backend.alive() and n1.lease.alive()
    assert health_status(n1.backend_socket) == "SERVING"


def test_host_gw_routes_each_subnet_via_the_peer_public_ip_and_removes_stale_routes_at_first_start(
    make_cluster: MakeCluster,
) -> None:
    def stale_route(c: Cluster, node: Any) -> None:  # left by an earlier run, before the backend ever started
        ip(
            node.ns,
            "route",
            "add",
            "10.244.252.0/24",
            "via",
            f"{c.underlay}.99",
            "dev",
            "eth0",
            "proto",
            "70",
        )

    c = make_cluster(
        3,
        {"Network": "10.244.0.0/16", "SubnetMax": "10.244.199.0", "Backend": {"Type": "host-gw"}},
        before_backend=stale_route,
    )
    for node in c.nodes:
        routes = ip_routes(node.ns)
        assert "10.244.252.0/24" not in routes
        for peer in c.nodes:
            if peer is not node:
                assert routes[peer.subnet] == (peer.public_ip, "eth0")
        assert kernel_objects(node.ns)["links"] == []
    assert_full_mesh(c, count=5)
    with EchoServer(c.node(2).pod_ns, c.node(2).pod_ip, 7004) as server:
        assert tcp_echo(c.node(3).pod_ns, c.node(2).pod_ip, 7004, b"host-gw\n") == b"host-gw\n"
        assert server.peers == [c.node(3).pod_ip]


def test_direct_routing_on_one_l2_routes_via_the_peer_public_ip_instead_of_vxlan(
    make_cluster: MakeCluster,
) -> None:
    c = make_cluster(
        3,
        {
            "Network": "10.244.0.0/16",
            "SubnetMax": "10.244.199.0",
            "Backend": {"Type": "vxlan", "DirectRouting": True},
        },
    )
    for node in c.nodes:
        routes = ip_routes(node.ns)
        for peer in c.nodes:
            if peer is not node:
                assert routes[peer.subnet] == (peer.public_ip, "eth0")
        modes = {p.lease.key: p.mode for p in c.backend_status(node).peers}
        assert modes == {peer.lease_key: "direct" for peer in c.nodes if peer is not node}
    assert_full_mesh(c, count=5)


def test_a_deleted_lease_takes_its_routes_neighbours_and_fdb_entries_off_the_other_nodes(
    make_cluster: MakeCluster,
) -> None:
    c = make_cluster(3)
    n3 = c.node(3)
    gone_mac = next(link["mac"] for link in kernel_objects(n3.ns)["links"])
    for node in (c.node(1), c.node(2)):
        objects = kernel_objects(node.ns)
        assert n3.subnet in {r["dst"] for r in objects["routes"]}
        assert gone_mac in {n["lladdr"] for n in objects["neighbours"]}
        assert n3.public_ip in {f["dst"] for f in objects["fdb"]}
    # n3's daemons stop first, or its lease service would take the lease straight back
    n3.backend.kill()
    n3.lease.kill()
    assert c.etcd_delete(f"{c.prefix}/subnets/{n3.lease_key}") == 1

    def n3_gone(ns: str) -> bool:
        objects = kernel_objects(ns)
        return (
            n3.subnet not in {r["dst"] for r in objects["routes"]}
            and gone_mac not in {n["lladdr"] for n in objects["neighbours"]}
            and n3.public_ip not in {f["dst"] for f in objects["fdb"]}
            and gone_mac not in {f["mac"] for f in objects["fdb"]}
        )

    for node in (c.node(1), c.node(2)):
        wait_until(partial(n3_gone, node.ns), timeout=15, what=f"{n3.subnet} gone from {node.name}")
        assert {r["dst"] for r in kernel_objects(node.ns)["routes"]} == {
            other.subnet for other in (c.node(1), c.node(2)) if other is not node
        }
    assert c.ping(c.node(1), c.node(2).pod_ip, 3).received == 3
    assert c.ping(c.node(1), n3.pod_ip, 2, interval=0.2).received == 0


def assert_follows_the_store(c: Cluster, node: Any) -> None:
    """A peer lease written into etcd reaches ``node``'s kernel, and its deletion takes it away."""
    key = "10.244.240.0-24"
    assert key not in c.leases(), "pick another probe subnet"
    value = {
        "PublicIP": f"{c.underlay}.97",
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": "0a:58:0a:f4:c7:01"},
    }
    c.etcd_put(f"{c.prefix}/subnets/{key}", json.dumps(value))
    try:
        wait_until(lambda: "10.244.240.0/24" in ip_routes(node.ns), timeout=15, what="the probe lease routed")
    finally:
        c.etcd_delete(f"{c.prefix}/subnets/{key}")
    wait_until(
        lambda: "10.244.240.0/24" not in ip_routes(node.ns), timeout=15, what="the probe lease removed"
    )


def rejected(c: Cluster, node: Any) -> dict[str, str]:
    """The leases ``node``'s backend refused, by key, with the reason code (GetStatus)."""
    return {r.lease.key: r.reason for r in c.backend_status(node).rejected}


def rejects(c: Cluster, node: Any, want: dict[str, str]) -> bool:
    return rejected(c, node) == want


def ip_routes(ns: str) -> dict[str, tuple[str | None, str | None]]:
    """The node's flannel routes: destination to (gateway, device)."""
    return {r["dst"]: (r["gateway"], r["dev"]) for r in kernel_objects(ns)["routes"]}


def test_dual_stack_pods_reach_each_other_over_ipv4_and_ipv6(make_cluster: MakeCluster) -> None:
    config = {
        "Network": "10.244.0.0/16",
        "SubnetMax": "10.244.199.0",
        "EnableIPv6": True,
        "IPv6Network": "fd10::/48",
        "Backend": {"Type": "vxlan"},
    }
    c = make_cluster(2, config)
    one, two = c.node(1), c.node(2)
    assert {"flannel.1", "flannel-v6.1"} <= {link["name"] for link in kernel_objects(one.ns)["links"]}
    # the device's own /128 skips duplicate address detection: usable at once, never "tentative"
    v6 = [
        a
        for e in ip_json(one.ns, "-6", "addr", "show", "dev", "flannel-v6.1")
        for a in e["addr_info"]
        if a.get("scope") == "global"
    ]
    assert len(v6) == 1 and v6[0]["prefixlen"] == 128 and v6[0].get("nodad") and not v6[0].get("tentative"), (
        v6
    )
    for src, dst in ((one, two), (two, one)):
        assert c.ping(src, dst.pod_ip, 3).received == 3
        assert c.ping(src, dst.pod_ipv6, 3).received == 3, (src.name, dst.pod_ipv6)
