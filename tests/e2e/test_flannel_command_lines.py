"""Existing flannel command lines start flanneld unchanged: kube-flannel.yml's ``args:`` and a
distribution's unit line in Go's single-dash syntax. What a test harness must add (where the sockets go,
how to reach the test API) comes through ``FLANNELD_*`` variables, which flannel reads too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flannel_testkit.cluster import Cluster, Node
from flannel_testkit.processes import Daemon

pytestmark = pytest.mark.netns

#: flannel's Documentation/kube-flannel.yml, the kube-flannel container's ``args:``, unchanged.
KUBE_FLANNEL_ARGS = ["--ip-masq", "--kube-subnet-mgr"]
#: The environment kube-flannel.yml gives the container (besides POD_NAME/POD_NAMESPACE).
KUBE_FLANNEL_ENV = ["EVENT_QUEUE_DEPTH=5000", "CONT_WHEN_CACHE_NOT_READY=false"]


def unit_line(etcd_endpoint: str) -> list[str]:
    """A distribution's flanneld unit line (Go's single-dash flags, booleans as -flag=true)."""
    return [
        f"-etcd-endpoints={etcd_endpoint}",
        "-etcd-prefix=/coreos.com/network",
        "-iface=eth0",
        "-ip-masq=true",
    ]


def flanneld(node: Node, cluster: Cluster, argv: list[str], env: list[str]) -> Daemon:
    log = cluster.base_dir / f"{node.name}-flanneld.log"
    # FLANNELD_LEASE_USER=root: the default lease user (nobody) cannot run this checkout's venv under /root
    return Daemon(
        "",
        [sys.executable, "-m", "supervisor", *argv],
        log,
        prefix=[
            "ip",
            "netns",
            "exec",
            node.ns,
            "env",
            f"FLANNELD_RUN_DIR={node.run_dir}",
            "FLANNELD_LEASE_USER=root",
            *env,
        ],
    )


def assert_pods_reach_each_other(cluster: Cluster) -> None:
    for src in cluster.nodes:
        for dst in cluster.nodes:
            if src is not dst:
                assert cluster.ping(src, dst.pod_ip, count=3).received == 3, (src.name, dst.name)


def assert_started_cleanly(node: Node) -> None:
    assert node.flanneld is not None
    log = node.flanneld.log()
    assert "ignoring environment variables" not in log and "Traceback" not in log, log[-2000:]
    assert node.subnet_env["FLANNEL_IPMASQ"] == "true", node.subnet_env  # -ip-masq=true / --ip-masq took


def test_a_distributions_unit_line_with_single_dash_flags_starts_a_node(tmp_path: Path) -> None:
    def command(cluster: Cluster, node: Node) -> Daemon:
        assert cluster.etcd is not None
        return flanneld(node, cluster, unit_line(cluster.etcd.endpoint), [])

    with Cluster(tmp_path, nodes=2, flanneld=True, flanneld_command=command) as cluster:
        assert cluster.etcd is not None
        for node in cluster.nodes:
            assert node.flanneld is not None and node.flanneld.args[-4:] == unit_line(cluster.etcd.endpoint)
            assert_started_cleanly(node)
        assert_pods_reach_each_other(cluster)


def test_kube_flannel_yml_args_start_a_node(tmp_path: Path) -> None:
    def command(cluster: Cluster, node: Node) -> Daemon:
        env = [
            f"FLANNELD_KUBE_API_URL={cluster.apiserver.url}",
            f"NODE_NAME={node.name}",
            f"FLANNELD_NET_CONFIG_PATH={cluster.base_dir / 'net-conf.json'}",
            "FLANNELD_IFACE=eth0",
            *KUBE_FLANNEL_ENV,
        ]
        return flanneld(node, cluster, KUBE_FLANNEL_ARGS, env)

    with Cluster(tmp_path, nodes=2, kube=True, flanneld=True, flanneld_command=command) as cluster:
        for node in cluster.nodes:
            assert node.flanneld is not None and node.flanneld.args[-2:] == KUBE_FLANNEL_ARGS
            assert_started_cleanly(node)
            assert node.subnet == f"10.244.{node.index}.0/24"  # the node's spec.podCIDR: kube mode it is
        assert_pods_reach_each_other(cluster)
