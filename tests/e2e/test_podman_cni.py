"""A real podman container on a flannel-py node, networked by podman itself through CNI with
flannel-cni (podman's CNI backend, run inside the node's namespace), talking to a pod on another node."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flannel_testkit.cluster import Cluster, Node, ping
from flannel_testkit.cni import CNI_PLUGIN_DIR, NETWORK_NAME, flannel_cni_binary
from flannel_testkit.podman import RUN_FLAGS, local_base_image, podman_missing
from flannel_testkit.wait import wait_until

pytestmark = pytest.mark.netns


class NodePodman:
    """podman run inside a node's network namespace, its CNI network the node's flannel-cni config."""

    def __init__(self, node: Node, conf_dir: Path) -> None:
        assert node.cni_config is not None
        self.node = node
        net_d = conf_dir / "net.d"
        net_d.mkdir(parents=True)
        plugin = {k: v for k, v in node.cni_config.items() if k not in ("cniVersion", "name")}
        conflist = {
            "cniVersion": node.cni_config["cniVersion"],
            "name": NETWORK_NAME,
            "plugins": [plugin, {"type": "portmap", "capabilities": {"portMappings": True}}],
        }
        (net_d / f"10-{NETWORK_NAME}.conflist").write_text(json.dumps(conflist, indent=2))
        self.containers_conf = conf_dir / "containers.conf"
        self.containers_conf.write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{flannel_cni_binary().parent}", "{CNI_PLUGIN_DIR}"]\n'
            f'network_config_dir = "{net_d}"\n'
        )

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        # nsenter, not `ip netns exec`: podman's own netns mounts must stay visible to its next call.
        proc = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.node.ns}", "podman", *args],
            env={**os.environ, "CONTAINERS_CONF": str(self.containers_conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc


@pytest.fixture
def image() -> str:
    if os.geteuid() != 0 or (missing := podman_missing()) or not (CNI_PLUGIN_DIR / "bridge").exists():
        pytest.skip(f"needs root, containernetworking-plugins and {missing or 'podman'}")
    return local_base_image(("iputils-ping", "iproute2"))


@pytest.fixture
def container_name() -> Iterator[Callable[[NodePodman], str]]:
    made: list[tuple[NodePodman, str]] = []

    def name(podman: NodePodman) -> str:
        made.append((podman, f"fpt{uuid.uuid4().hex[:6]}-ctr"))
        return made[-1][1]

    yield name
    for podman, each in made:
        podman("rm", "--force", "--time", "0", each, check=False)


@pytest.mark.timeout(900)
def test_a_podman_container_on_a_node_reaches_a_pod_on_another_node_through_flannel_cni(
    image: str,
    make_cluster: Callable[..., Cluster],
    tmp_path: Path,
    container_name: Callable[[NodePodman], str],
) -> None:
    c = make_cluster(2)
    one, two = c.node(1), c.node(2)
    podman = NodePodman(one, tmp_path / "podman")
    name = container_name(podman)
    podman("run", "--detach", "--name", name, "--network", NETWORK_NAME, *RUN_FLAGS, image, "sleep", "600")
    inspect: Any = json.loads(podman("inspect", name).stdout)[0]
    address = inspect["NetworkSettings"]["Networks"][NETWORK_NAME]["IPAddress"]
    # host-local, shared with the node's CNI pod: .2 is the pod's, the container gets .3 of node 1's subnet.
    assert address == one.pod_ip.rsplit(".", 1)[0] + ".3", inspect["NetworkSettings"]
    saved = one.run_dir / "cni" / "flannel" / inspect["Id"]
    assert json.loads(saved.read_text())["type"] == "bridge"  # flannel-cni saved its delegate for DEL

    out = podman("exec", name, "ping", "-n", "-c", "3", "-W", "2", two.pod_ip).stdout
    assert "3 received" in out, out
    assert ping(two.pod_ns, address, count=3).received == 3

    podman("rm", "--force", "--time", "0", name)
    wait_until(lambda: not saved.exists(), what="podman's CNI DEL removed flannel-cni's saved config")
    assert not (one.run_dir / "cni" / "networks" / NETWORK_NAME / address).exists()
