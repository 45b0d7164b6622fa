"""SIGTERM is honoured in every phase of the real children: waiting for etcd, waiting for the Kubernetes
API, and serving with WatchLeases streams open. flanneld exits 0 within the grace period, no child needs
SIGKILL, and no traceback is logged."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from proto.flannel.v1 import lease_pb2, lease_pb2_grpc
from tests.supervisor.conftest import EtcdNode
from tests.supervisor.harness import Flanneld, flanneld_starter

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

GRACE = 3.0  # the harness's --stop-grace


@pytest.fixture
def start(tmp_path: Path, node: EtcdNode) -> Iterator[Callable[..., Flanneld]]:
    with flanneld_starter(tmp_path) as start_one:

        def run(*args: str) -> Flanneld:
            # a generous start-up timeout: on a loaded machine the Kubernetes client alone takes seconds
            return start_one(
                args=(*args, "--startup-timeout", "90"),
                real_children=True,
                healthz=True,
                prefix=node.ns.exec_prefix,
                netns=node.ns.name,
            )

        yield run


def _stop_promptly(f: Flanneld) -> None:
    f.signal(signal.SIGTERM)
    assert f.wait(timeout=30) == 0, f.tail(40)
    output = "\n".join(f.lines + f.errors)
    # prompt: each child ended within its grace (GRACE) of SIGTERM, nobody needed SIGKILL (how long the
    # whole stop took on a loaded machine is no test's business)
    assert "still running after" not in output, output
    assert "Traceback" not in output and "CancelledError" not in output, output
    after = f.lines[next(i for i, line in enumerate(f.lines) if "received SIGTERM" in line) :]
    stopped = [line for line in after if "[flanneld]" in line and ") stopped: " in line]
    # a child still starting (importing, before its handler is installed) dies of the signal: as prompt
    assert len(stopped) == 2 and all(
        ("exit code 0" in line or "killed by SIGTERM" in line) for line in stopped
    ), stopped


def test_sigterm_while_the_lease_service_waits_for_etcd(start: Callable[..., Flanneld]) -> None:
    f = start("--etcd-endpoints", "http://127.0.0.1:1", "--iface", "eth0")
    f.wait_line("lease-service health: STARTING -> NOT_SERVING", timeout=30)  # up, the etcd client retrying
    f.wait_line("waiting for the lease service to serve")  # the backend waits on the gate
    _stop_promptly(f)


def test_sigterm_while_the_lease_service_waits_for_the_kubernetes_api(
    tmp_path: Path, start: Callable[..., Flanneld]
) -> None:
    net_conf = tmp_path / "net-conf.json"
    net_conf.write_text('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    f = start(
        "--kube-subnet-mgr",
        "--kube-api-url",
        "http://127.0.0.1:1",
        "--net-config-path",
        str(net_conf),
        "--node-name",
        "n1",
        "--iface",
        "eth0",
    )
    # the config is read; its first call to the API (this node's annotations) is refused and retried
    f.wait_line("waiting for this node's stored public IPs", timeout=30)
    f.wait_line("waiting for the lease service to serve")
    _stop_promptly(f)


def test_sigterm_with_lease_streams_open(node: EtcdNode, start: Callable[..., Flanneld]) -> None:
    node.put_config({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}})
    f = start("--etcd-endpoints", node.etcd.endpoint, "--iface", "eth0")
    f.wait_http("/healthz", 200, timeout=60)  # the backend is SERVING: its WatchLeases stream is open
    # and one more, as grpcurl or flannelctl watch would hold it, open while the lease service stops
    with grpc.insecure_channel(f"unix:{f.run_dir / 'lease.sock'}") as channel:
        stream = lease_pb2_grpc.LeaseServiceStub(channel).WatchLeases(lease_pb2.WatchLeasesRequest())
        first = next(stream)
        assert first.kind in (lease_pb2.WatchLeasesResponse.SNAPSHOT, lease_pb2.WatchLeasesResponse.SYNCED)
        _stop_promptly(f)
        stream.cancel()
