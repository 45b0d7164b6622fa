"""``flannelctl health``, the probes' command: one grpc.health.v1 check as exit status 0 or 1, against real
gRPC servers on unix sockets (the DaemonSet's probes run it in the real containers: tests/e2e/test_podman_daemonset.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

FLANNELCTL = str(Path(sys.executable).parent / "flannelctl")
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServer:
    """A gRPC server with only grpc.health.v1 on ``<run_dir>/<name>``."""

    def __init__(self, path: Path) -> None:
        self.servicer = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        self.server.add_insecure_port(f"unix:{path}")
        self.server.start()

    def set(self, status: int) -> None:
        self.servicer.set("", status)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def servers() -> Iterator[list[HealthServer]]:
    made: list[HealthServer] = []
    yield made
    for server in made:
        server.server.stop(0)


def health_cmd(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLANNELCTL, "--run-dir", str(run_dir), "--timeout", "2", "health", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("target, sock", [("lease-service", "lease.sock"), ("backend", "backend.sock")])
def test_ready_only_when_serving_and_alive_whenever_it_answers(
    run_dir: Path, servers: list[HealthServer], target: str, sock: str
) -> None:
    server = HealthServer(run_dir / sock)
    servers.append(server)

    server.set(SERVING)
    ready, live = health_cmd(run_dir, target), health_cmd(run_dir, target, "--live")
    assert (ready.returncode, live.returncode) == (0, 0), (ready, live)
    assert "SERVING (ready)" in ready.stdout and str(run_dir / sock) in ready.stdout

    server.set(NOT_SERVING)
    ready, live = health_cmd(run_dir, target), health_cmd(run_dir, target, "--live")
    assert (ready.returncode, live.returncode) == (1, 0), (ready, live)
    assert "NOT_SERVING (not ready)" in ready.stdout and "NOT_SERVING (alive)" in live.stdout


def test_a_missing_socket_fails_both_probes_with_status_1_naming_it(run_dir: Path) -> None:
    for args in (("lease-service",), ("lease-service", "--live")):
        proc = health_cmd(run_dir, *args)
        assert proc.returncode == 1, proc
        assert f"no lease service socket at {run_dir / 'lease.sock'}" in proc.stdout


def test_a_socket_nobody_answers_on_fails_the_liveness_probe(run_dir: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # bound, never listening: connections refused
    dead.bind(str(run_dir / "backend.sock"))
    try:
        proc = health_cmd(run_dir, "backend", "--live")
    finally:
        dead.close()
    assert proc.returncode == 1, proc
    assert "cannot reach the backend" in proc.stdout and "UNAVAILABLE" in proc.stdout


def test_an_unknown_target_is_a_usage_error() -> None:
    proc = subprocess.run(
        [FLANNELCTL, "health", "etcd"], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 2 and "invalid choice: 'etcd'" in proc.stderr
