"""The backend conformance kit: any backend that speaks flannel.v1 must pass these.

Run against your own backend (the plugin in ``flannel_conformance.plugin`` adds this module)::

    pytest --flannel-backend-cmd "/usr/local/bin/my-backend --run-dir {run_dir}" \\
        --flannel-backend-config '{"Type": "my-type"}' --flannel-peer-backend-data '{"Key": "value"}'

Collected without ``--flannel-backend-cmd`` (this repository's suite), it runs against the built-in
backends, vxlan, host-gw and wireguard.

Two nodes in network namespaces on one underlay, a real etcd, the real lease service (no
capabilities) and the backend under test (CAP_NET_ADMIN + CAP_NET_RAW only). A backend passes when it
serves health, reflection and GetStatus; follows leases in and out; routes the peers' pod subnets;
rejects what it cannot serve without falling over; survives a lease-service restart by resuming; and
lets a fresh snapshot replace its state.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from flannel_testkit.cluster import Cluster, Node, caps, ip
from flannel_testkit.grpcurl import grpcurl
from flannel_testkit.processes import health_status
from flannel_testkit.wait import wait_until
from proto.flannel.v1 import backend_pb2, backend_pb2_grpc

pytestmark = pytest.mark.netns


@dataclass(frozen=True)
class Subject:
    """One backend under test."""

    name: str
    backend: dict[str, Any]
    cmd: tuple[str, ...] | None
    peer_data: Any  # BackendData of a hand-made peer lease


def _json_option(config: pytest.Config, name: str, default: str) -> Any:
    text = config.getoption(name) or default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--{name.replace('_', '-')}: expected JSON, got {text!r}: {exc}") from None


def subjects(config: pytest.Config) -> list[Subject]:
    cmd = config.getoption("flannel_backend_cmd")
    if cmd:
        backend = _json_option(config, "flannel_backend_config", '{"Type": "custom"}')
        if not isinstance(backend, dict) or not isinstance(backend.get("Type", "custom"), str):
            raise pytest.UsageError(
                f'--flannel-backend-config: expected an object with a string "Type", got {backend!r}'
            )
        backend.setdefault("Type", "custom")
        data = _json_option(config, "flannel_peer_backend_data", "null")
        return [Subject(backend["Type"], backend, tuple(shlex.split(cmd)), data)]
    return [
        Subject("vxlan", {"Type": "vxlan"}, None, {"VNI": 1, "VtepMAC": "0a:58:c0:a8:4d:63"}),
        Subject("host-gw", {"Type": "host-gw"}, None, None),
        Subject(
            "wireguard",
            {"Type": "wireguard"},
            None,
            {"PublicKey": "Jm6GSYlb6wvDvdcA9xb+vWnlZ1MvfLxLTmxHGA0vB1o="},
        ),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "subject" in metafunc.fixturenames:
        found = subjects(metafunc.config)
        metafunc.parametrize("subject", found, ids=[s.name for s in found], scope="module")


@pytest.fixture(scope="module")
def cluster(subject: Subject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the conformance kit needs root (network namespaces)")
    for tool in ("ip", "setpriv", "ping", "etcd"):
        if shutil.which(tool) is None:
            pytest.skip(f"the conformance kit needs {tool}")
    # Nodes lease from 10.244.1-99; hand-made peers use 10.244.200 and up, so they never collide.
    config = {"Network": "10.244.0.0/16", "SubnetMax": "10.244.99.0", "Backend": subject.backend}
    if subject.backend.get("Type") == "wireguard" and shutil.which("wireguard-go") is None:
        pytest.skip("the wireguard backend needs wireguard-go (or kernel WireGuard) and wireguard-tools")
    # WireGuard's userspace devices keep their sockets in /run/wireguard: each node gets its own.
    with Cluster(
        tmp_path_factory.mktemp(f"conf-{subject.name}"),
        nodes=2,
        config=config,
        backend_cmd=subject.cmd,
        private_wireguard=subject.backend.get("Type") == "wireguard",
    ) as made:
        yield made


def status(node: Node) -> backend_pb2.GetStatusResponse:
    with grpc.insecure_channel(f"unix:{node.backend_socket}") as channel:
        return backend_pb2_grpc.BackendServiceStub(channel).GetStatus(
            backend_pb2.GetStatusRequest(), timeout=5
        )


def peer_keys(node: Node) -> set[str]:
    return {peer.lease.key for peer in status(node).peers}


def routes_to(cluster: Cluster, node: Node, subnet: str) -> str:
    return ip(node.ns, "route", "show", subnet).strip()


def fake_peer(cluster: Cluster, subject: Subject, n: int) -> tuple[str, str]:
    """Write a peer lease by hand (as another flannel node would); its (key, subnet)."""
    subnet, key = f"10.244.{200 + n}.0/24", f"10.244.{200 + n}.0-24"
    value: dict[str, Any] = {
        "PublicIP": f"{cluster.underlay}.{100 + n}",
        "BackendType": subject.backend["Type"],
    }
    if subject.peer_data is not None:
        value["BackendData"] = subject.peer_data
    assert cluster.etcd_http is not None
    cluster.etcd_http.put(f"{cluster.prefix}/subnets/{key}", json.dumps(value))
    return key, subnet


def test_it_serves_health_reflection_and_a_truthful_status(cluster: Cluster) -> None:
    node, other = cluster.node(1), cluster.node(2)
    assert health_status(node.backend_socket) == "SERVING"
    listed = grpcurl(node.backend_socket, "list").stdout.split()
    assert {"flannel.v1.BackendService", "grpc.health.v1.Health"} <= set(listed)
    reply = status(node)
    assert reply.synced
    assert reply.own_lease.subnet == node.subnet
    assert other.lease_key in {peer.lease.key for peer in reply.peers}


def test_it_routes_pod_traffic_to_its_peers(cluster: Cluster) -> None:
    one, two = cluster.node(1), cluster.node(2)
    result = cluster.ping(one, two.pod_ip, count=5)
    assert result.received == 5, result


def test_it_follows_a_lease_in_and_out(cluster: Cluster, subject: Subject) -> None:
    node = cluster.node(1)
    key, subnet = fake_peer(cluster, subject, 1)
    wait_until(lambda: key in peer_keys(node), what=f"{key} programmed")
    assert routes_to(cluster, node, subnet)
    assert cluster.etcd_http is not None
    cluster.etcd_http.delete(f"{cluster.prefix}/subnets/{key}")
    wait_until(lambda: key not in peer_keys(node), what=f"{key} unprogrammed")
    wait_until(lambda: not routes_to(cluster, node, subnet), what=f"route to {subnet} removed")


def test_a_lease_it_cannot_serve_is_rejected_and_harms_nothing(cluster: Cluster, subject: Subject) -> None:
    node = cluster.node(1)
    key, subnet = "10.244.230.0-24", "10.244.230.0/24"
    assert cluster.etcd_http is not None
    cluster.etcd_http.put(
        f"{cluster.prefix}/subnets/{key}",
        json.dumps({"PublicIP": f"{cluster.underlay}.130", "BackendType": "not-" + subject.backend["Type"]}),
    )
    wait_until(lambda: key in {r.lease.key for r in status(node).rejected}, what=f"{key} rejected")
    assert key not in peer_keys(node) and not routes_to(cluster, node, subnet)
    assert node.runs(node.backend) and health_status(node.backend_socket) == "SERVING"
    assert cluster.ping(node, cluster.node(2).pod_ip, count=3).received == 3
    cluster.etcd_http.delete(f"{cluster.prefix}/subnets/{key}")


def test_it_resumes_after_a_lease_service_restart(cluster: Cluster, subject: Subject) -> None:
    node = cluster.node(1)
    pid = node.backend.pid
    cluster.restart_lease_service(node, signal.SIGKILL)
    key, _ = fake_peer(cluster, subject, 2)
    wait_until(lambda: key in peer_keys(node), timeout=20, what=f"{key} programmed after the restart")
    assert node.backend.pid == pid, "the backend must survive a lease-service restart"
    assert cluster.etcd_http is not None
    cluster.etcd_http.delete(f"{cluster.prefix}/subnets/{key}")
    wait_until(lambda: key not in peer_keys(node), what=f"{key} unprogrammed")


def test_a_fresh_snapshot_replaces_its_state(cluster: Cluster, subject: Subject) -> None:
    node = cluster.node(1)
    key, subnet = fake_peer(cluster, subject, 3)
    wait_until(lambda: key in peer_keys(node), what=f"{key} programmed")
    node.lease.stop(signal.SIGKILL)
    assert cluster.etcd_http is not None
    cluster.etcd_http.delete(f"{cluster.prefix}/subnets/{key}")
    cluster.etcd_http.compact()  # the backend's cursor can no longer be resumed: it gets a snapshot
    cluster.start_lease_service(node)
    wait_until(lambda: key not in peer_keys(node), timeout=20, what=f"{key} gone after the snapshot")
    wait_until(lambda: not routes_to(cluster, node, subnet), what=f"route to {subnet} removed")
    assert cluster.ping(node, cluster.node(2).pod_ip, count=3).received == 3


def test_it_runs_with_only_net_admin_and_net_raw(cluster: Cluster) -> None:
    held = caps(cluster.node(1).backend.pid)
    assert held["CapEff"] == held["CapBnd"] == "0000000000003000", held
