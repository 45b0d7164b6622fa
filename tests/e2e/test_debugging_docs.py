"""The README's debugging section, executed: every ``grpcurl`` command in it runs with the real grpcurl
binary against a real node (etcd, lease service and backend in a namespace), every ``flannelctl`` line
parses, and every metric it names is served by ``--metrics-listen`` — so the docs cannot rot."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flannel_testkit.etcd import EtcdHttp, EtcdServer, free_port
from flannel_testkit.grpcurl import grpcurl_binary
from flannel_testkit.processes import Daemon, close_pipes, lone_lease_service
from flannel_testkit.wait import wait_until
from flannelctl.cli import build_parser
from proto.flannel.v1 import backend_pb2, lease_pb2, lease_pb2_grpc
from tests.flannelctl.single_node import SingleNode, peer_value, require_namespaces

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Debugging with grpcurl and flannelctl"
DOC_RUN_DIR = "/run/flannel/"
BACKEND_METRICS = "127.0.0.1:9102"  # inside the node's own namespace: no clash between workers


def section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def code_lines(tool: str) -> list[str]:
    """Lines of the section's code blocks that run ``tool``, without trailing comments."""
    lines, inside = [], False
    for line in section().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside and line.startswith(f"{tool} "):
            lines.append(re.sub(r"\s{2,}#.*$", "", line))  # a comment is set off by two or more spaces
    return lines


GRPCURL = code_lines("grpcurl")
STREAMING = {
    f"{service.full_name}/{method.name}"
    for file in (lease_pb2.DESCRIPTOR, backend_pb2.DESCRIPTOR)
    for service in file.services_by_name.values()
    for method in service.methods
    if method.server_streaming
}


def test_the_section_documents_the_essential_commands() -> None:
    joined = "\n".join(GRPCURL)
    for needed in (
        "/run/flannel/lease.sock list",
        "describe flannel.v1.LeaseService",
        "describe flannel.v1.WatchLeasesResponse",
        "grpc.health.v1.Health/Check",
        "-d '{}' /run/flannel/lease.sock flannel.v1.LeaseService/WatchLeases",
        "/run/flannel/backend.sock flannel.v1.BackendService/GetStatus",
    ):
        assert needed in joined, f"the README's debugging section lost {needed!r}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleNode]:
    require_namespaces()
    made = SingleNode(
        tmp_path_factory.mktemp("docs-node"), backend_args=("--metrics-listen", BACKEND_METRICS)
    )
    try:
        made.up(peers={"10.244.9.0-24": peer_value("192.168.77.2", "0a:58:0a:f4:09:01")})
        wait_until(
            lambda: "10.244.9.0/24" in made.ip("route", "show", "proto", "70"), what="the peer's route"
        )
        yield made
    finally:
        print(made.logs())
        made.down()


def _argv(command: str, run_dir: Path) -> list[str]:
    argv = shlex.split(command)
    assert argv[0] == "grpcurl"
    sockets = [i for i, arg in enumerate(argv) if arg.startswith(DOC_RUN_DIR)]
    assert len(sockets) == 1, f"{command}: expected one socket path under {DOC_RUN_DIR}"
    index = sockets[0]
    assert all(not arg.startswith("-") for arg in argv[index + 1 :]), (
        f"{command}: grpcurl takes no flag after the address"
    )
    argv[index] = str(run_dir / argv[index][len(DOC_RUN_DIR) :])
    return [grpcurl_binary(), *argv[1:]]


@pytest.mark.netns
@pytest.mark.etcd
@pytest.mark.parametrize("command", GRPCURL)
def test_every_grpcurl_command_of_the_readme_works(node: SingleNode, command: str) -> None:
    argv = _argv(command, node.run_dir)
    method = argv[-1]
    if method in STREAMING:  # runs until ^C: it must deliver its first message(s), then we stop it
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(proc.stdout or []), daemon=True)
        reader.start()
        want = '"kind": "SYNCED"' if method.endswith("/WatchLeases") else '"kind": "CURRENT"'
        try:
            wait_until(lambda: want in "".join(seen) or proc.poll() is not None, timeout=20, what=want)
            assert proc.poll() is None, (
                f"{command} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
            assert want in "".join(seen)
        finally:
            proc.kill()
            proc.wait()
            close_pipes(proc, reader)
        return
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\nstderr: {done.stderr}"
    assert done.stdout.strip()
    if method == "list":
        assert "grpc.health.v1.Health" in done.stdout and "flannel.v1." in done.stdout
    elif method.endswith("Health/Check"):
        assert json.loads(done.stdout) == {"status": "SERVING"}
    elif method.endswith("/GetStatus"):
        status = json.loads(done.stdout)
        assert status["device"] == "flannel.1" and status["peers"][0]["lease"]["key"] == "10.244.9.0-24"


def test_every_flannelctl_line_of_the_readme_parses() -> None:
    lines = code_lines("flannelctl")
    assert {shlex.split(line)[1] for line in lines} == {"leases", "watch", "status", "doctor"}
    for line in lines:
        args = build_parser().parse_args(shlex.split(line.replace("CURSOR", "abc"))[1:])
        assert callable(args.run)


def documented_metrics(prefix: str) -> set[str]:
    return set(re.findall(rf"`({prefix}[a-z_]+)`", section()))


def scrape(url: str) -> dict[str, float]:
    """Sample name (labels dropped, the first of each) → value."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, sample.value)
    return samples


def _served(documented: set[str], samples: dict[str, float]) -> set[str]:
    """The documented names missing from a scrape (a histogram is served as _bucket/_sum/_count)."""
    return {name for name in documented if name not in samples and f"{name}_count" not in samples}


@pytest.mark.netns
@pytest.mark.etcd
def test_the_backend_serves_every_documented_metric(node: SingleNode) -> None:
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://{BACKEND_METRICS}/metrics').read().decode())"
    out = node.run(["python3", "-c", fetch])
    samples = {s.name: s.value for f in text_string_to_metric_families(out.stdout) for s in f.samples}
    documented = documented_metrics("flannel_backend_")
    assert len(documented) >= 5 and not _served(documented, samples)
    assert samples["flannel_backend_peers"] == 1


@pytest.mark.etcd
def test_the_lease_gauge_equals_the_leases_in_etcd_and_every_documented_metric_is_served(
    etcd: EtcdServer, prefix: str, tmp_path: Path
) -> None:
    store = EtcdHttp(etcd.endpoint, prefix=prefix)
    put = store.put

    def keys_in_etcd() -> int:
        return store.count_prefix("subnets/")

    put("config", json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}))
    for i in range(3, 6):
        put(f"subnets/10.244.{i}.0-24", peer_value(f"192.168.50.{i}", f"0a:58:0a:f4:0{i}:01"))
    port = free_port()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    daemon = lone_lease_service(
        run_dir, etcd.endpoint, prefix, tmp_path / "lease.log", "--metrics-listen", f"127.0.0.1:{port}"
    ).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        daemon.wait_serving(run_dir / "lease.sock")
        assert wait_until(lambda: scrape(url)["flannel_lease_service_leases"] == keys_in_etcd() == 3)
        with grpc.insecure_channel(f"unix:{run_dir / 'lease.sock'}") as channel:
            stub = lease_pb2_grpc.LeaseServiceStub(channel)
            stub.AcquireLease(lease_pb2.AcquireLeaseRequest(backend_type="vxlan", mtu=1450), timeout=15)
            wait_until(
                lambda: scrape(url)["flannel_lease_service_leases"] == keys_in_etcd() == 4,
                what="the gauge to count our own lease",
            )
            call = stub.WatchLeases(lease_pb2.WatchLeasesRequest())
            first = next(iter(call))
            assert len(first.events) == 4
            wait_until(lambda: scrape(url)["flannel_lease_service_watchers"] == 1, what="one watcher")
            call.cancel()
        put("subnets/10.244.6.0-24", "not json")
        samples = wait_until(
            lambda: (s := scrape(url))["flannel_lease_service_corrupt_leases_total"] == 1 and s
        )
        assert samples["flannel_lease_service_leases"] == keys_in_etcd() - 1 == 4
        assert samples["flannel_lease_service_events_streamed_total"] >= 4
        documented = documented_metrics("flannel_lease_service_")
        assert len(documented) >= 5 and not _served(documented, samples)
        assert daemon.log().count("serving Prometheus metrics on http://127.0.0.1:") == 1
    finally:
        daemon.kill()


@pytest.mark.etcd
def test_a_bad_metrics_address_is_refused_naming_the_flag(etcd: EtcdServer, tmp_path: Path) -> None:
    daemon = Daemon(
        "lease_service",
        ["--run-dir", str(tmp_path), "--etcd-endpoints", etcd.endpoint, "--metrics-listen", "9101"],
        tmp_path / "lease.log",
    ).start()
    assert daemon.wait_exit() == 2
    assert "--metrics-listen: expected HOST:PORT (e.g. 127.0.0.1:9101), got '9101'" in daemon.log()
    backend = Daemon(
        "backend_service",
        ["--run-dir", str(tmp_path), "--metrics-listen", "localhost:x"],
        tmp_path / "backend.log",
    ).start()
    assert backend.wait_exit() == 2
    assert "--metrics-listen: expected HOST:PORT (e.g. 127.0.0.1:9101), got 'localhost:x'" in backend.log()
