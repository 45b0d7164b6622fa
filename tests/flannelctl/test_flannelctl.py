"""flannelctl, the real console script, against the real lease service on a real etcd, and (doctor,
status) against a real backend in a network namespace of its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from flannel_testkit.etcd import EtcdHttp, EtcdServer
from flannel_testkit.processes import close_pipes, health_status, lone_lease_service
from flannel_testkit.wait import wait_until
from proto.flannel.v1 import backend_pb2, backend_pb2_grpc, lease_pb2
from tests.flannelctl.single_node import SingleNode, peer_value, require_namespaces

CONFIG = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
FLANNELCTL = str(Path(sys.executable).parent / "flannelctl")
PEER_KEY, PEER_SUBNET, PEER_IP, PEER_MAC = (
    "10.244.9.0-24",
    "10.244.9.0/24",
    "192.168.77.2",
    "0a:58:0a:f4:09:01",
)


def flannelctl(
    run_dir: Path, *args: str, prefix: tuple[str, ...] = (), timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, FLANNELCTL, "--run-dir", str(run_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout, f"no output; exit {proc.returncode}, stderr: {proc.stderr}"
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- a lease service on the host


@pytest.fixture
def store(etcd: EtcdServer, prefix: str) -> EtcdHttp:
    """The shared etcd (from the host's network namespace), keys relative to this test's prefix."""
    return EtcdHttp(etcd.endpoint, prefix=prefix)


@pytest.fixture
def lease_service(etcd: EtcdServer, prefix: str, store: EtcdHttp, tmp_path: Path) -> Iterator[Path]:
    """A serving lease service (no backend) with two peer leases and its own lease; its run dir."""
    store.put("config", json.dumps(CONFIG))
    store.put("subnets/10.244.7.0-24", peer_value("192.168.50.7", "0a:58:0a:f4:07:01"))
    store.put("subnets/10.244.8.0-24", peer_value("192.168.50.8", "0a:58:0a:f4:08:01"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    daemon = lone_lease_service(
        run_dir, etcd.endpoint, prefix, tmp_path / "lease.log", "--etcd-call-timeout", "1"
    ).start()
    try:
        daemon.wait_serving(run_dir / "lease.sock")
        yield run_dir
    finally:
        daemon.kill()


def acquire(run_dir: Path) -> lease_pb2.Lease:
    from proto.flannel.v1 import lease_pb2_grpc

    with grpc.insecure_channel(f"unix:{run_dir / 'lease.sock'}") as channel:
        request = lease_pb2.AcquireLeaseRequest(
            backend_type="vxlan", mtu=1450, backend_data='{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}'
        )
        return lease_pb2_grpc.LeaseServiceStub(channel).AcquireLease(request, timeout=15).lease


def test_leases_shows_every_lease_of_one_snapshot_as_a_table_and_as_json(lease_service: Path) -> None:
    own = acquire(lease_service)

    def listing() -> dict[str, Any] | None:  # our own lease reaches the stream once etcd's watch delivers it
        found = as_json(flannelctl(lease_service, "leases", "-o", "json"))
        return found if own.key in {lease["key"] for lease in found["leases"]} else None

    listed = wait_until(listing, what="our own lease in the listing")
    by_key = {lease["key"]: lease for lease in listed["leases"]}
    assert set(by_key) == {"10.244.7.0-24", "10.244.8.0-24", own.key}
    assert by_key["10.244.7.0-24"] | {"backend_data": None} == {
        "key": "10.244.7.0-24",
        "subnet": "10.244.7.0/24",
        "ipv6_subnet": "",
        "public_ip": "192.168.50.7",
        "public_ipv6": "",
        "backend_type": "vxlan",
        "backend_data": None,
        "backend_v6_data": "",
        "node_name": "",
        "expiration": None,
    }
    assert json.loads(by_key["10.244.7.0-24"]["backend_data"]) == {"VNI": 1, "VtepMAC": "0a:58:0a:f4:07:01"}
    assert by_key[own.key]["public_ip"] == "192.168.50.1" and listed["cursor"]

    text = flannelctl(lease_service, "leases")
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert header.split() == ["KEY", "SUBNET", "IPV6", "SUBNET", "PUBLIC", "IP", "BACKEND", "NODE"]
    assert rows[0].split() == ["10.244.7.0-24", "10.244.7.0/24", "-", "192.168.50.7", "vxlan", "-"]
    assert len(rows) == 3


class WatchProcess:
    """``flannelctl watch -o json`` running, its lines read as they come."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [FLANNELCTL, "--run-dir", str(run_dir), "watch", "-o", "json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.records.append(json.loads(line))

    def kinds(self) -> list[tuple[str, str]]:
        return [(r["kind"], r.get("key", "")) for r in self.records]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        close_pipes(self.proc, self.thread)


def test_watch_prints_the_snapshot_then_live_events_and_resumes_from_a_cursor(
    lease_service: Path, store: EtcdHttp
) -> None:
    watch = WatchProcess(lease_service)
    try:
        wait_until(lambda: ("SYNCED", "") in watch.kinds(), what="SYNCED")
        synced = next(r for r in watch.records if r["kind"] == "SYNCED")
        assert watch.kinds()[:3] == [
            ("SNAPSHOT", "10.244.7.0-24"),
            ("SNAPSHOT", "10.244.8.0-24"),
            ("SYNCED", ""),
        ]
        assert watch.records[0]["reset"] is True and watch.records[0]["reason"] == "INITIAL"
        store.put("subnets/10.244.5.0-24", peer_value("192.168.50.5", "0a:58:0a:f4:05:01"))
        store.delete("subnets/10.244.8.0-24")
        wait_until(lambda: ("REMOVE", "10.244.8.0-24") in watch.kinds(), what="the removal")
        upsert = next(r for r in watch.records if r["kind"] == "UPSERT")
        assert (upsert["key"], upsert["subnet"], upsert["public_ip"]) == (
            "10.244.5.0-24",
            "10.244.5.0/24",
            "192.168.50.5",
        )
        assert upsert["cursor"] and upsert["time"].endswith("Z")
    finally:
        watch.stop()

    resumed = flannelctl(lease_service, "watch", "--cursor", synced["cursor"], "--count", "2")
    assert resumed.returncode == 0, resumed.stderr
    lines = [line.split() for line in resumed.stdout.splitlines()]
    assert [line[1:5] for line in lines] == [
        ["UPSERT", "10.244.5.0-24", "10.244.5.0/24", "192.168.50.5"],
        ["REMOVE", "10.244.8.0-24", "10.244.8.0/24", "192.168.50.8"],
    ]


def test_watch_resumes_by_cursor_when_the_lease_service_restarts(
    etcd: EtcdServer, prefix: str, store: EtcdHttp, tmp_path: Path
) -> None:
    store.put("config", json.dumps(CONFIG))
    store.put("subnets/10.244.7.0-24", peer_value("192.168.50.7", "0a:58:0a:f4:07:01"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    daemon = lone_lease_service(run_dir, etcd.endpoint, prefix, tmp_path / "lease.log")
    watch: WatchProcess | None = None
    try:
        daemon.start()
        wait_until(lambda: health_status(run_dir / "lease.sock") == "SERVING", timeout=20, what="SERVING")
        watch = WatchProcess(run_dir)
        wait_until(lambda: ("SYNCED", "") in watch.kinds(), what="SYNCED")
        daemon.kill()
        store.put("subnets/10.244.5.0-24", peer_value("192.168.50.5", "0a:58:0a:f4:05:01"))
        daemon.start()
        wait_until(
            lambda: ("UPSERT", "10.244.5.0-24") in watch.kinds(),
            timeout=20,
            what="the lease written while the lease service was down",
        )
        assert watch.proc.poll() is None
        # the restarted lease service resumed the cursor (a DELTA), it did not send a second snapshot
        assert [k for k in watch.kinds() if k[0] == "SNAPSHOT"] == [("SNAPSHOT", "10.244.7.0-24")]
    finally:
        if watch is not None:
            watch.stop()
        daemon.kill()


def test_status_shows_the_lease_service_and_names_the_missing_backend_socket(lease_service: Path) -> None:
    own = acquire(lease_service)
    proc = flannelctl(lease_service, "status", "-o", "json")
    assert proc.returncode == 2
    assert f"no backend socket at {lease_service / 'backend.sock'}" in proc.stderr
    status = as_json(proc)
    lease = status["lease_service"]
    assert (lease["health"], lease["service_health"]) == ("SERVING", "SERVING")
    assert (
        lease["describe"]["name"] == "flannel-py lease service"
        and "flannel.v1" in lease["describe"]["api_versions"]
    )
    assert lease["own_lease"]["key"] == own.key and lease["own_lease"]["public_ip"] == "192.168.50.1"
    assert lease["config"]["network"] == "10.244.0.0/16" and lease["config"]["backend_type"] == "vxlan"
    assert status["healthy"] is False and "backend.sock" in status["backend"]["error"]


def test_no_service_is_a_connection_error_naming_the_socket(tmp_path: Path) -> None:
    for command in (["leases"], ["watch"], ["status"], ["doctor", "10.244.1.0/24"]):
        proc = flannelctl(tmp_path, *command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert str(tmp_path / "lease.sock") in proc.stderr, proc.stderr
    stale = tmp_path / "lease.sock"
    stale.write_text("")  # a file where the socket should be
    proc = flannelctl(tmp_path, "leases")
    assert proc.returncode == 2 and f"{stale} is not a unix socket" in proc.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert flannelctl(tmp_path, "frobnicate").returncode == 2
    assert flannelctl(tmp_path, "leases", "-o", "yaml").returncode == 2
    assert flannelctl(tmp_path, "doctor").returncode == 2


class FakeBackend:
    """A backend that only answers health (NOT_SERVING) and GetStatus, on a unix socket."""

    class Servicer(backend_pb2_grpc.BackendServiceServicer):
        def Describe(self, request: Any, context: Any) -> lease_pb2.DescribeResponse:
            return lease_pb2.DescribeResponse(name="fake backend", version="0", api_versions=["flannel.v1"])

        def GetStatus(self, request: Any, context: Any) -> backend_pb2.GetStatusResponse:
            return backend_pb2.GetStatusResponse(backend_type="vxlan", device="flannel.1", mtu=1450)

    def __init__(self, socket: Path) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        backend_pb2_grpc.add_BackendServiceServicer_to_server(self.Servicer(), self.server)
        self.health = health.HealthServicer()
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_insecure_port(f"unix:{socket}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


def test_status_exits_1_when_a_service_is_not_serving_and_says_what_the_lease_service_waits_for(
    etcd: EtcdServer, prefix: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    daemon = lone_lease_service(run_dir, etcd.endpoint, prefix, tmp_path / "lease.log").start()
    backend = FakeBackend(run_dir / "backend.sock")
    try:  # no network config in etcd: the lease service stays NOT_SERVING
        wait_until(
            lambda: health_status(run_dir / "lease.sock") == "NOT_SERVING", timeout=20, what="NOT_SERVING"
        )
        proc = flannelctl(run_dir, "status", "-o", "json")
        assert proc.returncode == 1, proc.stderr
        status = as_json(proc)
        assert (
            status["lease_service"]["health"] == "NOT_SERVING"
            and status["backend"]["health"] == "NOT_SERVING"
        )
        assert "waiting for a usable network config" in status["lease_service"]["config"]["error"]
        assert status["backend"]["status"]["device"] == "flannel.1"
        text = flannelctl(run_dir, "status")
        assert (
            text.returncode == 1
            and "NOT_SERVING" in text.stdout
            and "device flannel.1  MTU 1450" in text.stdout
        )
    finally:
        backend.stop()
        daemon.kill()


# --------------------------------------------------------------------------- a whole node in a namespace


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SingleNode]:
    require_namespaces()
    made = SingleNode(tmp_path, backend_args=("--metrics-listen", "127.0.0.1:9102"))
    try:
        made.up(
            peers={
                PEER_KEY: peer_value(PEER_IP, PEER_MAC),
                "10.244.10.0-24": peer_value("192.168.77.3", "0a:58:0a:f4:0a:01", vni=2),
            }
        )
        yield made
    finally:
        print(made.logs())
        made.down()


VXLAN_CHECKS = ("lease", "accepted", "programmed", "device", "route", "neighbour", "fdb")
"""doctor's checks of an IPv4 vxlan peer, in order."""


def doctor(node: SingleNode, target: str) -> tuple[int, dict[str, Any], str]:
    as_data = flannelctl(node.run_dir, "doctor", target, "-o", "json", prefix=tuple(node.exec_prefix))
    as_text = flannelctl(node.run_dir, "doctor", target, prefix=tuple(node.exec_prefix))
    assert as_data.returncode == as_text.returncode, (as_data.stderr, as_text.stderr)
    return as_data.returncode, as_json(as_data), as_text.stdout


@pytest.mark.netns
@pytest.mark.etcd
def test_doctor_follows_a_peer_from_lease_to_kernel_and_names_what_is_missing(node: SingleNode) -> None:
    wait_until(lambda: "10.244.9.0/24" in node.ip("route", "show", "proto", "70"), what="the peer's route")
    code, result, text = doctor(node, PEER_SUBNET)
    assert code == 0, text
    assert [c["name"] for c in result["checks"]] == list(VXLAN_CHECKS)
    assert all(c["status"] == "ok" for c in result["checks"]) and result["verdict"].startswith(
        "ok: 10.244.9.0-24"
    )
    assert text.splitlines()[-1].startswith("ok: ")
    for other_name in (PEER_KEY, PEER_IP, "10.244.9.77"):  # by key, by public IP, by pod IP
        assert doctor(node, other_name)[0] == 0

    node.ip("route", "del", PEER_SUBNET)
    code, result, text = doctor(node, PEER_SUBNET)
    assert code == 1
    assert [c["name"] for c in result["checks"] if c["status"] == "fail"] == ["route"]
    assert result["verdict"].startswith(
        f"problem: the route to {PEER_SUBNET} is missing "
        f"(expected {PEER_SUBNET} via 10.244.9.0 dev flannel.1 onlink)"
    )
    assert text.splitlines()[-1] == result["verdict"] and "[FAIL] route" in text

    node.run(["bridge", "fdb", "del", PEER_MAC, "dev", "flannel.1", "dst", PEER_IP])
    node.ip("neigh", "del", "10.244.9.0", "dev", "flannel.1")
    _, result, _ = doctor(node, PEER_KEY)
    assert [c["name"] for c in result["checks"] if c["status"] == "fail"] == ["route", "neighbour", "fdb"]

    # a device set down is no longer the doctor's to find: the backend's device watcher brings it back up
    node.ip("link", "set", "flannel.1", "down")
    wait_until(
        lambda: re.search(r"[<,]UP[,>]", node.ip("link", "show", "flannel.1")), what="flannel.1 up again"
    )
    _, result, _ = doctor(node, PEER_KEY)
    assert [c["status"] for c in result["checks"] if c["name"] == "device"] == ["ok"]


@pytest.mark.netns
@pytest.mark.etcd
def test_doctor_names_a_rejected_lease_with_its_reason_and_a_peer_with_no_lease(node: SingleNode) -> None:
    code, result, _ = doctor(node, "10.244.10.0/24")
    assert code == 1
    assert result["verdict"].startswith("problem: the backend rejected lease 10.244.10.0-24: VNI_MISMATCH: ")
    code, result, _ = doctor(node, "10.244.99.0/24")
    assert code == 1 and result["lease"] is None
    assert result["verdict"].startswith(
        "problem: no lease for 10.244.99.0/24: the lease service knows 3 leases"
    )
    own = json.loads(flannelctl(node.run_dir, "leases", "-o", "json").stdout)["leases"]
    own_key = next(lease["key"] for lease in own if lease["public_ip"] == "192.168.77.1")
    code, result, _ = doctor(node, own_key)
    assert code == 0 and result["verdict"] == f"ok: {own_key} is this node's own lease"


@pytest.mark.netns
@pytest.mark.etcd
def test_status_of_a_running_node_shows_peers_rejections_and_the_last_reconcile(node: SingleNode) -> None:
    wait_until(lambda: "10.244.9.0/24" in node.ip("route", "show", "proto", "70"), what="the peer's route")
    proc = flannelctl(node.run_dir, "status", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    backend = as_json(proc)["backend"]
    assert (backend["health"], backend["describe"]["name"]) == ("SERVING", "flannel-py backend")
    status = backend["status"]
    assert (status["backend_type"], status["device"], status["mtu"], status["synced"]) == (
        "vxlan",
        "flannel.1",
        1450,
        True,
    )
    assert [(p["lease"]["key"], p["mode"]) for p in status["peers"]] == [(PEER_KEY, "vxlan")]
    assert [(r["lease"]["key"], r["reason"]) for r in status["rejected"]] == [
        ("10.244.10.0-24", "VNI_MISMATCH")
    ]
    assert status["last_reconcile_outcome"] == "ok" and status["last_reconcile"].endswith("Z")
    text = flannelctl(node.run_dir, "status").stdout
    assert f"{PEER_KEY}  {PEER_SUBNET}  {PEER_IP}  vxlan" in text and "10.244.10.0-24  VNI_MISMATCH: " in text

    scrape = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9102/metrics').read().decode())"
    metrics = node.run(["python3", "-c", scrape]).stdout
    values = {
        line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line and line[0] != "#"
    }
    assert values["flannel_backend_peers"] == 1 and values["flannel_backend_rejected_leases"] == 1
    assert values["flannel_backend_kernel_ops_applied_total"] >= 3  # route, neighbour, FDB entry
    assert values["flannel_backend_reconcile_duration_seconds_count"] >= 1
    assert "flannel_backend_lease_service_reconnects_total" in values


# --------------------------------------------------------------------------- the diagnosis on its own


class FakeKernel:
    """What ``ip -json`` / ``bridge -json`` would print, from plain data."""

    def __init__(
        self,
        links: dict[str, list[str]],
        routes: list[dict[str, Any]],
        neighbours: dict[str, list[dict[str, Any]]],
        fdb: dict[str, list[dict[str, Any]]],
    ) -> None:
        self._links, self._routes, self._neighbours, self._fdb = links, routes, neighbours, fdb

    def link(self, device: str) -> dict[str, Any] | None:
        return (
            {"ifname": device, "flags": self._links[device], "mtu": 1450} if device in self._links else None
        )

    def routes(self, subnet: str) -> list[dict[str, Any]]:
        return [r for r in self._routes if r["dst"] == subnet]

    def neighbours(self, device: str) -> list[dict[str, Any]]:
        return self._neighbours.get(device, [])

    def fdb(self, device: str) -> list[dict[str, Any]]:
        return self._fdb.get(device, [])


DUAL = lease_pb2.Lease(
    key="10.244.9.0-24&fd10::9:0-112",
    subnet="10.244.9.0/24",
    ipv6_subnet="fd10::9:0/112",
    public_ip="192.168.77.2",
    public_ipv6="fd00::2",
    backend_type="vxlan",
    node_name="node-9",
    backend_data='{"VNI":1,"VtepMAC":"0a:58:0a:f4:09:01"}',
    backend_v6_data='{"VNI":1,"VtepMAC":"0a:58:0a:f4:09:06"}',
)


def _status(lease: lease_pb2.Lease, mode: str) -> backend_pb2.GetStatusResponse:
    return backend_pb2.GetStatusResponse(
        backend_type="vxlan",
        device="flannel.1",
        synced=True,
        last_reconcile_outcome="ok",
        peers=[backend_pb2.Peer(lease=lease, mode=mode)],
    )


def test_a_dual_stack_peer_is_checked_on_both_vxlan_devices() -> None:
    from flannelctl.doctor import diagnose

    kernel = FakeKernel(
        links={"flannel.1": ["BROADCAST", "UP"], "flannel-v6.1": ["BROADCAST", "UP"]},
        routes=[
            {"dst": "10.244.9.0/24", "gateway": "10.244.9.0", "dev": "flannel.1"},
            {"dst": "fd10::9:0/112", "gateway": "fd10::9:0", "dev": "flannel-v6.1"},
        ],
        neighbours={
            "flannel.1": [{"dst": "10.244.9.0", "lladdr": "0a:58:0a:f4:09:01", "state": ["PERMANENT"]}],
            "flannel-v6.1": [{"dst": "fd10::9:0", "lladdr": "0a:58:0a:f4:09:06", "state": ["PERMANENT"]}],
        },
        fdb={
            "flannel.1": [{"mac": "0a:58:0a:f4:09:01", "dst": "192.168.77.2"}],
            "flannel-v6.1": [{"mac": "0a:58:0a:f4:09:06", "dst": "fd00::2"}],
        },
    )
    result = diagnose("node-9", [DUAL], _status(DUAL, "vxlan"), kernel)
    assert [c.name for c in result.checks] == [*VXLAN_CHECKS, "device6", "route6", "neighbour6", "fdb6"]
    assert result.ok, result.checks
    only_v4 = diagnose("node-9", [DUAL], _status(DUAL, "vxlan"), kernel, families=(4,))
    assert [c.name for c in only_v4.checks][-1] == "fdb"

    kernel._fdb["flannel-v6.1"] = [{"mac": "0a:58:0a:f4:09:06", "dst": "fd00::99"}]
    result = diagnose("fd10::9:5", [DUAL], _status(DUAL, "vxlan"), kernel)
    assert result.verdict.startswith(
        "problem: the FDB entry for 0a:58:0a:f4:09:06 on flannel-v6.1 points to fd00::99, expected fd00::2"
    )


def test_a_host_gw_peer_needs_only_its_route_via_the_public_ip() -> None:
    from flannelctl.doctor import diagnose

    lease = lease_pb2.Lease(
        key="10.244.9.0-24", subnet="10.244.9.0/24", public_ip="192.168.77.2", backend_type="host-gw"
    )
    good = FakeKernel({}, [{"dst": "10.244.9.0/24", "gateway": "192.168.77.2", "dev": "eth0"}], {}, {})
    result = diagnose("10.244.9.0/24", [lease], _status(lease, "host-gw"), good)
    assert result.ok and [c.name for c in result.checks][-1] == "route"
    wrong = FakeKernel({}, [{"dst": "10.244.9.0/24", "gateway": "192.168.77.9", "dev": "eth0"}], {}, {})
    result = diagnose("10.244.9.0/24", [lease], _status(lease, "host-gw"), wrong)
    assert result.verdict.startswith(
        "problem: the route to 10.244.9.0/24 is wrong: 10.244.9.0/24 via 192.168.77.9 "
        "dev eth0, expected 10.244.9.0/24 via 192.168.77.2"
    )


def test_a_peer_the_backend_has_not_programmed_yet_is_named_with_the_reason() -> None:
    from flannelctl.doctor import diagnose

    lease = lease_pb2.Lease(key="10.244.9.0-24", subnet="10.244.9.0/24", public_ip="192.168.77.2")
    unsynced = backend_pb2.GetStatusResponse(device="flannel.1", synced=False)
    assert diagnose("10.244.9.0-24", [lease], unsynced, FakeKernel({}, [], {}, {})).verdict == (
        "problem: the backend has not applied the lease stream's snapshot yet (synced: false)"
    )
    failing = backend_pb2.GetStatusResponse(
        device="flannel.1", synced=True, last_reconcile_outcome="error: boom"
    )
    assert diagnose("10.244.9.0-24", [lease], failing, FakeKernel({}, [], {}, {})).verdict == (
        "problem: the backend has not programmed 10.244.9.0-24; last reconcile: error: boom"
    )
