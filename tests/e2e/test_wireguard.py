"""The wireguard backend end to end, with wireguard-go (this kernel has no WireGuard module): real
devices in node namespaces, each node with its own /run/wireguard, real packets, and a capture on
the underlay that must show only WireGuard's UDP, never the pods' traffic in clear."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backend_service.wgkey import Key
from flannel_testkit.cluster import Cluster, EchoServer, ip_json, pinging_without_loss, tcp_echo
from flannel_testkit.grpcurl import grpcurl
from flannel_testkit.processes import close_pipes
from flannel_testkit.wait import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.etcd,
    pytest.mark.skipif(
        shutil.which("wireguard-go") is None or shutil.which("wg") is None,
        reason="needs wireguard-go and wireguard-tools",
    ),
]

MakeCluster = Callable[..., Cluster]
WG = {"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}


def wg_cluster(
    make_cluster: MakeCluster, nodes: int = 2, config: dict[str, Any] | None = None, **kwargs: Any
) -> Cluster:
    return make_cluster(nodes, config or WG, private_wireguard=True, **kwargs)


def peers(cluster: Cluster, node: Any, device: str = "flannel-wg") -> dict[str, dict[str, str]]:
    """``wg show <device> dump`` on ``node``: public key → endpoint, allowed IPs."""
    out: dict[str, dict[str, str]] = {}
    for line in cluster.wg(node, "show", device, "dump").splitlines()[1:]:
        f = line.split("\t")
        out[f[0]] = {"endpoint": f[2], "allowed_ips": f[3], "handshake": f[4]}
    return out


def public_key(cluster: Cluster, node: Any, device: str = "flannel-wg") -> str:
    return cluster.wg(node, "show", device, "public-key").strip()


def status(node: Any) -> dict[str, Any]:
    out = grpcurl(node.backend_socket, "flannel.v1.BackendService/GetStatus")
    return json.loads(out.stdout)


def doctor(node: Any, target: str) -> dict[str, Any]:
    """``flannelctl doctor TARGET -o json`` in ``node``'s namespace."""
    ctl = str(Path(sys.executable).parent / "flannelctl")
    out = subprocess.run(
        ["ip", "netns", "exec", node.ns, ctl, "--run-dir", str(node.run_dir), "doctor", target, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.stdout, out.stderr
    return dict(json.loads(out.stdout))


def capture(ns: str, port: str, traffic: Callable[[], None], path: Path) -> list[str]:
    """tcpdump on one port of the underlay bridge while ``traffic()`` runs; the decoded lines."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpdump", "-i", port, "-n", "--immediate-mode", "-U", "-w", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "listening on br0, ..." once the capture runs
        assert b"listening" in line, line
        traffic()
        # every packet written (pcap header 24 bytes, then records) before the capture stops
        wait_until(lambda: path.stat().st_size > 24, timeout=10, what="packets in the capture file")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        close_pipes(proc)
    out = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_pods_reach_each_other_over_wireguard_and_the_underlay_sees_only_encrypted_udp(
    make_cluster: MakeCluster,
    tmp_path: Path,
) -> None:
    c = wg_cluster(make_cluster, nodes=3)
    for node in c.nodes:
        others = [o for o in c.nodes if o is not node]
        held = peers(c, node)
        assert set(held) == {public_key(c, o) for o in others}
        assert {p["endpoint"] for p in held.values()} == {f"{o.public_ip}:51820" for o in others}
        assert {p["allowed_ips"] for p in held.values()} == {o.subnet for o in others}
        routes = ip_json(node.ns, "route", "show", "dev", "flannel-wg", "proto", "70")
        assert {r["dst"] for r in routes} == {o.subnet for o in others}
        link = ip_json(node.ns, "link", "show", "flannel-wg")[0]
        assert link["mtu"] == 1500 - 80 and node.subnet_env["FLANNEL_MTU"] == "1420"

    payload = b"secret pod payload " * 2000

    def traffic() -> None:
        assert c.ping(c.node(1), c.node(2).pod_ip, count=5).received == 5
        with EchoServer(c.node(3).pod_ns, c.node(3).pod_ip, 7101):
            assert tcp_echo(c.node(1).pod_ns, c.node(3).pod_ip, 7101, payload) == payload

    lines = capture(c.ul_ns, "n1", traffic, tmp_path / "underlay.pcap")  # node 1's side of the underlay
    pod_ips = {n.pod_ip for n in c.nodes}
    assert any("UDP" in line and ".51820" in line for line in lines), lines[:20]
    in_clear = [line for line in lines if any(f" {ip}" in line or f" {ip}." in line for ip in pod_ips)]
    assert not in_clear, in_clear[:10]
    assert not [line for line in lines if "ICMP" in line and "echo" in line], lines[:20]

    reply = status(c.node(1))
    wg = reply["wireguard"]
    assert wg["implementation"] == "wireguard-go"
    assert wg["public_key"] == public_key(c, c.node(1))
    by_lease = {p["lease_key"]: p for p in wg["peers"]}
    assert set(by_lease) == {n.lease_key for n in c.nodes[1:]}
    assert by_lease[c.node(2).lease_key]["latest_handshake"]  # node 2 was pinged: a handshake happened
    verdict = doctor(c.node(1), c.node(2).pod_ip)
    assert verdict["verdict"].startswith("ok"), verdict
    assert {check["name"] for check in verdict["checks"]} >= {"route", "wireguard", "handshake"}


def test_a_backend_restart_keeps_the_key_changes_nothing_and_loses_no_packet(
    make_cluster: MakeCluster,
) -> None:
    c = wg_cluster(make_cluster, nodes=2)
    n1, n2 = c.node(1), c.node(2)
    before_key = public_key(c, n1)
    before_peers = peers(c, n2)
    before_routes = ip_json(n1.ns, "route", "show", "dev", "flannel-wg")
    with pinging_without_loss(n2.pod_ns, n1.pod_ip, count=400):
        c.restart_backend(n1)
    assert public_key(c, n1) == before_key
    assert ip_json(n1.ns, "route", "show", "dev", "flannel-wg") == before_routes
    assert (c.node(1).run_dir / "wgkey").read_text().strip()  # the key file, reused
    after = peers(c, n2)
    assert {k: v["endpoint"] for k, v in after.items()} == {k: v["endpoint"] for k, v in before_peers.items()}


def test_a_removed_lease_removes_its_peer_and_route(make_cluster: MakeCluster) -> None:
    c = wg_cluster(make_cluster, nodes=3)
    gone = c.node(3)
    key = public_key(c, gone)
    gone.backend.stop()
    gone.lease.stop()
    c.etcd_delete(f"{c.prefix}/subnets/{gone.lease_key}")
    for node in c.nodes[:2]:
        wait_until(
            lambda node=node: key not in peers(c, node), timeout=30, what=f"peer of n3 gone from {node.name}"
        )
        routes = ip_json(node.ns, "route", "show", "dev", "flannel-wg", "proto", "70")
        assert gone.subnet not in {r["dst"] for r in routes}
    assert c.ping(c.node(1), c.node(2).pod_ip, count=3).received == 3


def test_dual_stack_in_separate_mode_uses_one_device_per_family(make_cluster: MakeCluster) -> None:
    config = {
        "Network": "10.244.0.0/16",
        "EnableIPv6": True,
        "IPv6Network": "fd10::/56",
        "Backend": {"Type": "wireguard", "Mode": "separate"},
    }
    c = wg_cluster(make_cluster, nodes=2, config=config)
    one, two = c.node(1), c.node(2)
    assert c.ping(one, two.pod_ip, count=3).received == 3
    assert c.ping(one, two.pod_ipv6, count=3).received == 3
    v6 = peers(c, one, "flannel-wg-v6")
    assert [p["endpoint"] for p in v6.values()] == ["[fd77::2]:51821"]
    assert [p["allowed_ips"] for p in v6.values()] == [
        two.subnet_env["FLANNEL_IPV6_SUBNET"].replace("::1/", "::/")
    ]


def test_a_node_with_another_psk_gets_no_traffic_and_no_handshake(make_cluster: MakeCluster) -> None:
    """Kube mode, where each node reads its own net-conf.json: node 2's says another PSK (a ConfigMap
    rolled out to half the nodes). The handshake cannot complete; no packet passes; status says so."""
    psk_a, psk_b = (str(Key.generate()) for _ in range(2))
    config: dict[str, Any] = {"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard", "PSK": psk_a}}
    c = wg_cluster(make_cluster, nodes=2, config=config, kube=True)
    n1, n2 = c.node(1), c.node(2)
    assert c.ping(n1, n2.pod_ip, count=3).received == 3  # same PSK: fine

    other = c.base_dir / "net-conf-n2.json"
    other.write_text(json.dumps({**config, "Backend": {**config["Backend"], "PSK": psk_b}}))
    n2.backend.stop()
    n2.lease.stop()
    n2.lease.args = [str(other) if a == str(c.base_dir / "net-conf.json") else a for a in n2.lease.args]
    c.start_lease_service(n2)
    c.start_backend(n2)
    # A new session must be negotiated: restart n1's side so no old session key can carry packets.
    c.wg(n1, "set", "flannel-wg", "peer", public_key(c, n2), "remove")
    c.restart_backend(n1)
    assert c.ping(n1, n2.pod_ip, count=5).received == 0
    wg = status(n1)["wireguard"]
    peer = next(p for p in wg["peers"] if p["public_key"] == public_key(c, n2))
    assert peer["lease_key"] == "n2"  # kube mode: the lease is the Node
    assert "latest_handshake" not in peer
    verdict = doctor(n1, "n2")
    assert "no WireGuard handshake with n2" in verdict["verdict"] and "PSK" in verdict["verdict"], verdict
    assert c.ping(n2, n1.pod_ip, count=3).received == 0
