"""The DaemonSet of deploy/kube-flannel-py.yml, run with a real container runtime.

The image is built by tools/build-image (as a user builds it), and each node's pod runs under podman as
kubelet would start it from the manifest (flannel_testkit/kubelet.py reads image, command, args, env, security
contexts and volumes from the YAML): two nodes of the namespace harness, the containers in each node's
network namespace, the test Kubernetes API server reached through a mounted kubeconfig, and pods pinging
across the VXLAN overlay. Inside the running containers: the lease container has no capability and a
non-root uid, the backend exactly NET_ADMIN and NET_RAW, and the probes' commands pass.
"""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml

from flannel_testkit.cluster import Cluster, NodeDaemons, ip
from flannel_testkit.kubeapi import KubeApiControl
from flannel_testkit.kubelet import (
    REPO,
    Container,
    Kubelet,
    Manifest,
    PodPlacement,
    build_image,
    remove_labelled,
)
from flannel_testkit.wait import wait_until
from tests.e2e.conftest import require_root_and

pytestmark = [pytest.mark.netns, pytest.mark.timeout(1800)]

MANIFEST = REPO / "deploy" / "kube-flannel-py.yml"
NET_ADMIN_AND_NET_RAW = f"{(1 << 12) | (1 << 13):016x}"
NO_CAPABILITIES = "0" * 16
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in pyproject.toml")


@pytest.fixture(scope="module")
def image() -> str:
    require_root_and("podman", "ip", "ping", "etcd", why="podman and network namespaces")
    return build_image()


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": url}}],
                "users": [{"name": "flannel-py", "user": {"token": "test"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "flannel-py"}}],
            }
        )
    )
    return path


class DaemonSetNodes:
    """The Cluster's ``node_daemons`` factory: each node's pod from the manifest, under podman."""

    def __init__(self, manifest: Manifest, image: str) -> None:
        self.manifest = manifest
        self.image = image
        self.kubelets: dict[int, Kubelet] = {}
        self.skipped_init: list[str] = []

    def __call__(self, cluster: Cluster, i: int, ns: str) -> NodeDaemons:
        # a real node has a default route; the lease service picks its interface by it (no --iface in the manifest)
        ip(ns, "route", "add", "default", "via", f"{cluster.underlay}.254", "dev", "eth0", "onlink")
        kubeconfig = write_kubeconfig(cluster.base_dir / "kubeconfig", cluster.apiserver.url)
        placement = PodPlacement(
            node_name=f"n{i}",
            netns=ns,
            node_root=cluster.base_dir / f"n{i}-root",
            pod_dir=cluster.base_dir / f"n{i}-pod",
            test_id=cluster.id,
            kubeconfig=kubeconfig,
        )
        kubelet = Kubelet(self.manifest, placement)
        for init in kubelet.pod.get("initContainers", []):
            if (
                init["image"].rpartition(":")[0] != "flannel-py"
            ):  # flannel's CNI plugin image is not built here
                self.skipped_init.append(init["name"])
                continue
            kubelet.run_init(init["name"])
        self.kubelets[i] = kubelet
        return NodeDaemons(
            lease=kubelet.daemon("lease-service", cluster.base_dir / f"n{i}-lease.log"),
            backend=kubelet.daemon("backend", cluster.base_dir / f"n{i}-backend.log"),
            run_dir=kubelet.host_path("lease-service", kubelet.flag("lease-service", "--run-dir")),
            subnet_file=kubelet.host_path("lease-service", kubelet.flag("lease-service", "--subnet-file")),
        )


@pytest.fixture
def podman_cluster(image: str) -> Iterator[tuple[Cluster, DaemonSetNodes]]:
    manifest = Manifest.load(MANIFEST)
    net_conf = json.loads(manifest.one("ConfigMap")["data"]["net-conf.json"])
    nodes = DaemonSetNodes(manifest, image)
    # A short base: the sockets live below it, and a unix socket path has at most 107 bytes (pytest's
    # tmp_path alone can take 80 of them).
    base = Path(tempfile.mkdtemp(prefix="fpd-", dir="/tmp"))
    cluster = Cluster(
        base / "c", nodes=2, config=net_conf, kube=True, node_daemons=nodes, start_timeout=300
    )  # a loaded machine starts Python slowly (the startupProbe allows 120 s)
    try:
        cluster.up()
        yield cluster, nodes
    finally:
        for node in cluster.nodes:
            for daemon in (node.lease, node.backend):
                print(f"----- {node.name} {daemon.log_path} -----\n{daemon.log()[-3000:]}")
        cluster.down()
        remove_labelled(cluster.id)
        shutil.rmtree(base, ignore_errors=True)


def test_the_manifest_names_the_image_tools_build_image_builds(image: str) -> None:
    manifest = Manifest.load(MANIFEST)
    pod = manifest.pod_spec
    ours = {c["image"] for c in [*pod["initContainers"], *pod["containers"]] if "flannel-py" in c["image"]}
    assert ours == {f"flannel-py:{version()}"}
    assert image == f"localhost/flannel-py:{version()}"


def test_the_daemonset_under_podman_connects_pods_across_nodes_with_the_privilege_split(
    podman_cluster: tuple[Cluster, DaemonSetNodes],
) -> None:
    cluster, nodes = podman_cluster
    n1, n2 = cluster.nodes
    assert nodes.skipped_init == ["install-cni-plugin", "install-cni-plugin"]

    # pods ping across nodes over the VXLAN overlay programmed by the backend containers
    for src, dst in ((n1, n2), (n2, n1)):
        result = cluster.ping(src, dst.pod_ip, count=5)
        assert result.received == result.sent == 5, result.output
    assert cluster.kernel_objects(n1)["links"][0]["name"] == "flannel.1"

    # the lease service published the node's lease through the API server (the mounted kubeconfig)
    for node in cluster.nodes:
        notes = cluster.kube_api(partial(KubeApiControl.get_node, name=node.name))["metadata"]["annotations"]
        assert notes["flannel.alpha.coreos.com/public-ip"] == node.public_ip
        assert notes["flannel.alpha.coreos.com/kube-subnet-manager"] == "true"

    for i, node in enumerate(cluster.nodes, start=1):
        kubelet = nodes.kubelets[i]
        assert isinstance(node.lease, Container) and isinstance(node.backend, Container)
        lease, backend = node.lease.proc_status(), node.backend.proc_status()
        # the lease container: the image's non-root user, no capability at all, no way to gain one
        assert lease["Uid"].split() == ["65532"] * 4 and lease["Gid"].split() == ["65532"] * 4
        for field in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
            assert lease[field] == NO_CAPABILITIES, (field, lease[field])
        assert lease["NoNewPrivs"] == "1"
        # the backend container: uid 0 with exactly NET_ADMIN and NET_RAW, and the socket group
        assert backend["Uid"].split() == ["0"] * 4
        assert backend["CapEff"] == backend["CapBnd"] == backend["CapPrm"] == NET_ADMIN_AND_NET_RAW
        assert backend["NoNewPrivs"] == "1"
        fs_group = str(kubelet.pod["securityContext"]["fsGroup"])
        assert fs_group in backend["Groups"].split()
        # what the init containers did on the node: the CNI config, and /run/flannel handed to the lease user
        conflist = kubelet.at.node_root / "etc/cni/net.d/10-flannel.conflist"
        assert conflist.read_text() == kubelet.manifest.one("ConfigMap")["data"]["cni-conf.json"]
        run_flannel = (kubelet.at.node_root / "run/flannel").stat()
        assert (run_flannel.st_uid, stat.S_IMODE(run_flannel.st_mode)) == (65532, 0o755)
        # every probe's command passes in the running container, as kubelet's exec probe runs it
        for container in ("lease-service", "backend"):
            for kind in PROBES:
                outcome = wait_until(
                    lambda c=container, k=kind, kubelet=kubelet: (
                        (p := kubelet.probe(c, k)).returncode == 0 and p
                    ),
                    timeout=60,
                    what=f"{node.name} {container} {kind}",
                )
                assert "SERVING" in outcome.stdout, outcome
