"""Unkind hosts, end to end: a Docker-like node (FORWARD policy DROP, Docker's chains, a trailing REJECT)
and an nftables-only node (no iptables binaries on the backend's PATH). Pods on different nodes reach
each other over IPv4 and dual stack, with and without --ip-masq; the rules are flannel's; a deleted
jump or rule comes back within a couple of --iptables-resync periods."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

import pytest

from backend_service.masq import MasqNetwork, forward_rules, masq_rules, nft_forward_rules, nft_masq_rules
from flannel_testkit.cluster import Cluster, flannel_rules, ns_exec
from flannel_testkit.hostprofiles import DOCKER_LIKE, NFT_ONLY_PATH, NFTABLES_ONLY
from flannel_testkit.wait import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

MakeCluster = Callable[..., Cluster]
RESYNC = 1
RESYNC_ARGS = ["--iptables-resync", str(RESYNC)]
V4 = {"Network": "10.244.0.0/16", "SubnetMax": "10.244.199.0", "Backend": {"Type": "vxlan"}}
DUAL = {**V4, "EnableIPv6": True, "IPv6Network": "fd10::/48"}
FWD_JUMP = '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD'
MASQ_JUMP = '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'


def restored_in_time() -> float:
    """A couple of resync periods, with room for a loaded 2-core machine."""
    return 10 * RESYNC + 10


def assert_pods_reach_each_other(c: Cluster, ipv6: bool) -> None:
    for src in c.nodes:
        for dst in c.nodes:
            if src is dst:
                continue
            assert c.ping(src, dst.pod_ip, 3).received == 3, (src.name, dst.pod_ip)
            if ipv6:
                assert c.ping(src, dst.pod_ipv6, 3).received == 3, (src.name, dst.pod_ipv6)


def chain_rules(ns: str, table: str, chain: str, tool: str = "iptables") -> list[str]:
    out = ns_exec(ns, [tool, "-t", table, "-S", chain]).stdout.splitlines()
    return [line.split(" ", 2)[2] for line in out if line.startswith("-A ")]


def families(c: Cluster, node_index: int) -> list[tuple[str, MasqNetwork]]:
    node = c.node(node_index)
    out = [("iptables", MasqNetwork(ip_network(c.config["Network"]), ip_network(node.subnet)))]
    if c.ipv6:
        out.append(
            (
                "ip6tables",
                MasqNetwork(
                    ip_network(c.config["IPv6Network"]),
                    ip_network(node.subnet_env["FLANNEL_IPV6_SUBNET"], strict=False),
                ),
            )
        )
    return out


def assert_iptables_rules_are_flannels(c: Cluster, masquerade: bool) -> None:
    for node in c.nodes:
        for tool, net in families(c, node.index):
            forward = chain_rules(node.ns, "filter", "FORWARD", tool)
            assert forward[0] == FWD_JUMP.split(" ", 2)[2], (node.name, tool, forward)
            assert forward[-1].startswith("-j REJECT"), forward  # Docker's and the REJECT are still there
            assert any("DOCKER-USER" in r for r in forward)
            assert chain_rules(node.ns, "filter", "FLANNEL-FWD", tool) == forward_rules(net)
            if masquerade:
                assert chain_rules(node.ns, "nat", "POSTROUTING", tool)[0] == MASQ_JUMP.split(" ", 2)[2]
                assert chain_rules(node.ns, "nat", "FLANNEL-POSTRTG", tool) == masq_rules(
                    net, random_fully=True
                )
            else:
                assert "FLANNEL-POSTRTG" not in "".join(flannel_rules(node.ns, f"{tool}-save"))


def assert_blackholes(c: Cluster) -> None:
    """--ip-blackhole-route: one for each own subnet, and the pods (behind cni0, whose route came later) reachable."""
    for node in c.nodes:
        routes = ns_exec(node.ns, ["ip", "route", "show", "type", "blackhole"]).stdout
        assert f"blackhole {node.subnet} proto 70 metric 4294967295" in routes, routes
        if c.ipv6:
            subnet6 = str(ip_network(node.subnet_env["FLANNEL_IPV6_SUBNET"], strict=False))
            assert subnet6 in ns_exec(node.ns, ["ip", "-6", "route", "show", "type", "blackhole"]).stdout


def test_docker_like_host_ipv4_without_ip_masq_and_a_deleted_jump_comes_back(
    make_cluster: MakeCluster,
) -> None:
    c = make_cluster(2, V4, host_profile=DOCKER_LIKE, backend_args=[*RESYNC_ARGS, "--ip-blackhole-route"])
    assert_pods_reach_each_other(c, ipv6=False)
    assert_iptables_rules_are_flannels(c, masquerade=False)
    assert_blackholes(c)

    one = c.node(1)
    ns_exec(one.ns, ["iptables", "-D", "FORWARD", "1"])  # flannel's jump, first in FORWARD
    wait_until(
        lambda: chain_rules(one.ns, "filter", "FORWARD")[0] == FWD_JUMP.split(" ", 2)[2],
        timeout=restored_in_time(),
        what="the FORWARD jump restored, first",
    )
    ns_exec(one.ns, ["iptables", "-F", "FLANNEL-FWD"])
    wait_until(
        lambda: chain_rules(one.ns, "filter", "FLANNEL-FWD") == forward_rules(families(c, 1)[0][1]),
        timeout=restored_in_time(),
        what="FLANNEL-FWD refilled",
    )
    assert_pods_reach_each_other(c, ipv6=False)


def test_docker_like_host_drops_pod_traffic_without_the_forward_rules(make_cluster: MakeCluster) -> None:
    """The profile has teeth: with --iptables-forward-rules=false the same pods cannot reach each other."""
    c = make_cluster(2, V4, host_profile=DOCKER_LIKE, backend_args=["--iptables-forward-rules=false"])
    assert c.ping(c.node(1), c.node(2).pod_ip, 2).received == 0
    assert flannel_rules(c.node(1).ns) == []


def test_docker_like_host_dual_stack_with_ip_masq_and_deleted_rules_come_back(
    make_cluster: MakeCluster,
) -> None:
    c = make_cluster(
        2, DUAL, host_profile=DOCKER_LIKE, ip_masq=True, backend_args=[*RESYNC_ARGS, "--ip-blackhole-route"]
    )
    assert_pods_reach_each_other(c, ipv6=True)
    assert_iptables_rules_are_flannels(c, masquerade=True)
    assert_blackholes(c)

    two = c.node(2)
    (_, net4), (_, net6) = families(c, 2)
    ns_exec(two.ns, ["iptables", "-t", "nat", "-D", "POSTROUTING", "1"])
    ns_exec(two.ns, ["ip6tables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "2"])
    ns_exec(two.ns, ["ip6tables", "-D", "FORWARD", "1"])
    wait_until(
        lambda: (
            chain_rules(two.ns, "nat", "POSTROUTING")[0] == MASQ_JUMP.split(" ", 2)[2]
            and chain_rules(two.ns, "nat", "FLANNEL-POSTRTG", "ip6tables") == masq_rules(net6)
            and chain_rules(two.ns, "filter", "FORWARD", "ip6tables")[0] == FWD_JUMP.split(" ", 2)[2]
        ),
        timeout=restored_in_time(),
        what="the deleted jumps and rule restored",
    )
    assert chain_rules(two.ns, "nat", "FLANNEL-POSTRTG") == masq_rules(net4)
    assert_pods_reach_each_other(c, ipv6=True)


def nft_chain(ns: str, fam: str, table: str, chain: str) -> list[str]:
    out = ns_exec(ns, ["nft", "list", "chain", fam, table, chain], check=False).stdout.splitlines()
    return [
        line.strip()
        for line in out
        if line.strip() and not line.strip().startswith(("table", "chain", "comment", "type", "}"))
    ]


@pytest.mark.parametrize(
    ("config", "ip_masq"), [(V4, False), (DUAL, True)], ids=["ipv4", "dual-stack-ip-masq"]
)
def test_nftables_only_host(make_cluster: MakeCluster, config: dict[str, Any], ip_masq: bool) -> None:
    c = make_cluster(2, config, host_profile=NFTABLES_ONLY, ip_masq=ip_masq, backend_args=RESYNC_ARGS)
    assert json.loads(c.etcd_get(f"{c.prefix}/config") or "{}")["EnableNFTables"] is True
    assert_pods_reach_each_other(c, ipv6=c.ipv6)
    for node in c.nodes:
        tables = ns_exec(node.ns, ["nft", "list", "tables"]).stdout
        assert "table ip flannel-ipv4" in tables and "table ip6 flannel-ipv6" in tables
        assert flannel_rules(node.ns) == [] and flannel_rules(node.ns, "ip6tables-save") == []
        for tool, net in families(c, node.index):
            fam, table = ("ip", "flannel-ipv4") if tool == "iptables" else ("ip6", "flannel-ipv6")
            assert nft_chain(node.ns, fam, table, "forward") == nft_forward_rules(net)
            assert nft_chain(node.ns, fam, table, "postrtg") == (nft_masq_rules(net) if ip_masq else [])

    one = c.node(1)
    net = families(c, 1)[0][1]
    ns_exec(one.ns, ["nft", "flush", "chain", "ip", "flannel-ipv4", "forward"])
    wait_until(
        lambda: nft_chain(one.ns, "ip", "flannel-ipv4", "forward") == nft_forward_rules(net),
        timeout=restored_in_time(),
        what="the flushed nftables chain refilled",
    )
    ns_exec(one.ns, ["nft", "delete", "table", "ip", "flannel-ipv4"])
    wait_until(
        lambda: nft_chain(one.ns, "ip", "flannel-ipv4", "forward") == nft_forward_rules(net),
        timeout=restored_in_time(),
        what="the deleted nftables table recreated",
    )
    assert_pods_reach_each_other(c, ipv6=c.ipv6)


def test_nftables_only_host_in_iptables_mode_fails_with_a_clear_message(make_cluster: MakeCluster) -> None:
    with pytest.raises(RuntimeError) as failed:
        make_cluster(1, V4, host_profile=NFT_ONLY_PATH)
    message = str(failed.value)
    assert "backend exited" in message, message
    assert "iptables mode needs iptables, iptables-save, iptables-restore on PATH" in message, message
    assert "EnableNFTables" in message and "Traceback" not in message, message
