"""Nodes as unkind as real hosts, with real packets: the underlay on the second NIC (chosen by
--iface-regex and by --iface-can-reach), underlay MTUs of 1400 and 9000 with ``MTU`` set in the config
(DF pings at the exact largest size and one byte more), a VXLAN device deleted or changed while pods
ping, and ``flanneld cleanup`` removing ours and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from flannel_testkit.cluster import BackgroundPing, Cluster, Node, ip, ip_json, kernel_objects, ns_exec, ping
from flannel_testkit.profiles import MTU_1400, MTU_9000, TWO_NICS, HostProfile
from flannel_testkit.wait import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

MakeCluster = Callable[..., Cluster]
IPV4 = {"Network": "10.244.0.0/16", "SubnetMax": "10.244.199.0", "Backend": {"Type": "vxlan"}}
DUAL = {**IPV4, "EnableIPv6": True, "IPv6Network": "fd10::/48", "IPv6SubnetLen": 64}
STACKS = [pytest.param(IPV4, id="ipv4"), pytest.param(DUAL, id="dual-stack")]


def vxlan_link(node: Node, name: str = "flannel.1") -> dict[str, Any]:
    [link] = ip_json(node.ns, "-d", "link", "show", name)
    return link


def lease_of(cluster: Cluster, node: Node) -> dict[str, Any]:
    # dual stack: flannel's combined key "<v4 subnet>&<v6 subnet>"
    return next(doc for key, doc in cluster.leases().items() if key.split("&")[0] == node.lease_key)


def df_ping(src: Node, dst: str, size: int, *, v6: bool = False) -> bool:
    """One ``ping -M do -s size`` (don't fragment) from ``src``'s pod; True when the reply came."""
    argv = [
        "ping",
        *(["-6"] if v6 else []),
        "-n",
        "-q",
        "-c",
        "1",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        str(size),
        dst,
    ]
    return ns_exec(src.pod_ns, argv, check=False).returncode == 0


def df_ping_settled(src: Node, dst: str, size: int, *, v6: bool = False) -> bool:
    """A DF ping after the path's MTU is learnt: a too-big IPv6 packet first earns a Packet Too Big."""
    return df_ping(src, dst, size, v6=v6) or df_ping(src, dst, size, v6=v6)


@pytest.mark.parametrize("config", STACKS)
@pytest.mark.parametrize(
    "choice",
    [
        pytest.param(["--iface-regex", "^eth1$"], id="iface-regex"),
        pytest.param(["--iface-can-reach", "192.168.77.250"], id="iface-can-reach"),
    ],
)
def test_the_underlay_on_the_second_nic_is_chosen_once_for_vxlan_local_and_the_published_ip(
    make_cluster: MakeCluster, config: dict[str, Any], choice: list[str]
) -> None:
    c = make_cluster(2, config, profile=TWO_NICS, lease_args=choice)
    for node in c.nodes:
        link = vxlan_link(node)
        info = link["linkinfo"]["info_data"]
        assert info["local"] == node.public_ip and info["link"] == "eth1", info
        lease = lease_of(c, node)
        assert lease["PublicIP"] == node.public_ip
        if "EnableIPv6" in config:
            v6 = vxlan_link(node, "flannel-v6.1")["linkinfo"]["info_data"]
            local6 = v6.get("local6") or v6.get("local")
            assert local6 == f"fd77::{node.index:x}" == lease["PublicIPv6"] and v6["link"] == "eth1", v6
        # the first NIC holds the default route: nothing chose it
        assert ip_json(node.ns, "route", "show", "default")[0]["dev"] == "eth0"
    assert c.ping(c.node(1), c.node(2).pod_ip).lost == 0
    if "EnableIPv6" in config:
        assert c.ping(c.node(1), c.node(2).pod_ipv6).lost == 0


@pytest.mark.parametrize("config", STACKS)
@pytest.mark.parametrize("profile", [pytest.param(MTU_1400, id="1400"), pytest.param(MTU_9000, id="9000")])
def test_the_mtu_option_is_the_underlay_mtu_and_df_pings_fit_to_the_byte(
    make_cluster: MakeCluster, config: dict[str, Any], profile: HostProfile
) -> None:
    mtu = profile.underlay_mtu
    assert mtu is not None
    c = make_cluster(2, {**config, "Backend": {"Type": "vxlan", "MTU": mtu}}, profile=profile)
    a, b = c.node(1), c.node(2)
    assert a.mtu == mtu - 50  # FLANNEL_MTU, flannel's value
    assert vxlan_link(a)["mtu"] == mtu - 50
    largest = mtu - 50 - 20 - 8  # pod MTU minus the inner IPv4 and ICMP headers
    assert df_ping_settled(a, b.pod_ip, largest), f"{largest} bytes with DF must cross a {mtu} underlay"
    assert not df_ping(a, b.pod_ip, largest + 1)
    if "EnableIPv6" in config:
        assert vxlan_link(a, "flannel-v6.1")["mtu"] == mtu - 70
        largest6 = mtu - 70 - 40 - 8  # the IPv6 device's MTU minus the inner IPv6 and ICMPv6 headers
        assert df_ping_settled(a, b.pod_ipv6, largest6, v6=True)
        assert not df_ping_settled(a, b.pod_ipv6, largest6 + 1, v6=True)


@pytest.mark.parametrize("config", STACKS)
def test_a_deleted_or_changed_vxlan_device_is_restored_while_pods_ping(
    make_cluster: MakeCluster, config: dict[str, Any]
) -> None:
    # repaired at once, not by the periodic reconcile: with an hour between those, each repair below has
    # a deadline sized for a loaded machine and still far below the period
    c = make_cluster(2, config, backend_args=["--resync-period", "3600"])
    a, b = c.node(1), c.node(2)
    before = vxlan_link(a)
    assert ns_exec(a.ns, ["cat", "/proc/sys/net/ipv6/conf/flannel.1/accept_ra"]).stdout.strip() == "0"
    background = BackgroundPing(a.pod_ns, b.pod_ip, count=300, interval=0.01, timeout=1)
    try:
        wait_until(lambda: ping(a.pod_ns, b.pod_ip, count=1, timeout=1).lost == 0, what="pods ping")
        ip(a.ns, "link", "del", "flannel.1")
        wait_until(
            lambda: ping(a.pod_ns, b.pod_ip, count=1, timeout=0.5).lost == 0,
            timeout=60,
            what="pods reach each other again after flannel.1 was deleted",
        )
        during = background.result()
    finally:
        background.kill()
    assert during.received > 0, during
    after = vxlan_link(a)
    assert after["address"] == before["address"] and after["ifindex"] != before["ifindex"]
    assert ns_exec(a.ns, ["cat", "/proc/sys/net/ipv6/conf/flannel.1/accept_ra"]).stdout.strip() == "0"
    # the other direction goes through the re-programmed neighbour and FDB entries too
    assert c.ping(b, a.pod_ip, count=3).lost == 0
    if "EnableIPv6" in config:
        ip(a.ns, "link", "del", "flannel-v6.1")
        wait_until(
            lambda: ping(a.pod_ns, b.pod_ipv6, count=1, timeout=0.5).lost == 0,
            timeout=60,
            what="IPv6 pods reach each other again after flannel-v6.1 was deleted",
        )
    # a MAC changed by someone else is put back: the peers know the published one
    ip(a.ns, "link", "set", "flannel.1", "address", "02:11:22:33:44:55")
    wait_until(lambda: vxlan_link(a)["address"] == before["address"], timeout=60, what="MAC restored")
    # so is the address
    ip(a.ns, "addr", "flush", "dev", "flannel.1")
    wait_until(
        lambda: kernel_objects(a.ns)["links"][0]["addrs"] == [f"{a.subnet.split('/')[0]}/32"],
        timeout=60,
        what="address restored",
    )
    assert c.ping(a, b.pod_ip, count=3).lost == 0


def flanneld_cleanup(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", node.ns, sys.executable, "-m", "supervisor", "cleanup", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def foreign_state(node: Node) -> tuple[list[str], list[str]]:
    routes = sorted(r["dst"] for r in ip_json(node.ns, "route", "show") if r["dst"].startswith("10.99."))
    links = sorted(
        link["ifname"] for link in ip_json(node.ns, "link", "show") if link["ifname"].startswith("fx")
    )
    return routes, links


def test_cleanup_dry_run_lists_ours_and_cleanup_removes_only_ours(make_cluster: MakeCluster) -> None:
    c = make_cluster(2, {**IPV4, "Backend": {"Type": "vxlan", "DirectRouting": False}}, ip_masq=True)
    a, b = c.node(1), c.node(2)
    # things that are not ours: a route, a VXLAN device, a veth pair named like nothing of ours
    ip(a.ns, "route", "add", "10.99.0.0/16", "via", b.public_ip, "dev", "eth0")
    ip(a.ns, "link", "add", "fxvxlan", "type", "vxlan", "id", "42", "dstport", "4789", "dev", "eth0")
    ip(a.ns, "link", "set", "fxvxlan", "up")
    ip(a.ns, "route", "add", "10.99.1.0/24", "dev", "fxvxlan", "proto", "static")
    foreign = foreign_state(a)
    assert foreign == (["10.99.0.0/16", "10.99.1.0/24"], ["fxvxlan"])

    dry = flanneld_cleanup(a, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove device flannel.1" in dry.stdout
    assert f"would remove route {b.subnet}" in dry.stdout and f"dst {b.public_ip}" in dry.stdout
    assert "FLANNEL-POSTRTG" in dry.stdout
    assert "10.99." not in dry.stdout and "fxvxlan" not in dry.stdout
    assert kernel_objects(a.ns)["links"], "a dry run changed nothing"

    for daemon in (a.backend, a.lease):  # stopped first, or the backend would put it all back
        daemon.kill()
    done = flanneld_cleanup(a)
    assert done.returncode == 0, done.stdout + done.stderr
    left = kernel_objects(a.ns)
    assert left["links"] == [] and left["routes"] == [] and left["fdb"] == [] and left["neighbours"] == []
    assert not any("FLANNEL" in rule for rule in left["rules"]), left["rules"]
    assert foreign_state(a) == foreign
    again = flanneld_cleanup(a, "--dry-run")
    assert "nothing of flannel-py's to remove" in again.stdout
    assert json.loads(json.dumps(foreign_state(b)))  # the other node is untouched by a's cleanup
    assert kernel_objects(b.ns)["links"]
