"""A hostile corpus against a running 2-node cluster: bad keys, values, configs and gRPC requests written
into the real etcd (and, in kube mode, into Node objects of the Kubernetes test API). Afterwards both
nodes are SERVING, every good peer is still programmed (kernel state and a ping), every bad item is named
once in the logs or in GetStatus, and the logs grew by less than LOG_GROWTH_BOUND."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from flannel_rpc.logs import FloodGate, label
from flannel_testkit.cluster import Cluster, Node, ip_json
from flannel_testkit.processes import Daemon, health_status
from flannel_testkit.wait import wait_until
from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

#: What the whole corpus may add to the four daemon logs of the two nodes together (bytes). Each bad item
#: costs at most one line (< 400 bytes) per daemon; 1 MB values appear cut to 64 characters.
LOG_GROWTH_BOUND = 128 * 1024
MIB = 1024 * 1024
VTEP = {"VNI": 1, "VtepMAC": "0a:58:0a:f4:fa:01"}
Msg = lease_pb2.WatchLeasesResponse


def lease(ip: str = "192.168.77.90", **extra: Any) -> bytes:
    return json.dumps({"PublicIP": ip, "BackendType": "vxlan", "BackendData": VTEP, **extra}).encode()


def etcd_corpus() -> dict[bytes, bytes]:
    """Key (below <prefix>/subnets/) to value: every item here is bad and must be named."""
    deep = b"[" * 100_000 + b"]" * 100_000
    items: dict[bytes, bytes] = {
        # keys flannel would not take (the value is a fine lease)
        "10.244.241.0-２４".encode(): lease(),
        b"10.244.242.0-24\n": lease(),
        b"10.244.243.0-24 ": lease(),
        b" 10.244.244.0-24": lease(),
        b"10.244.245.0-24&FC00::-64": lease(),
        b"10.244.246.0-99": lease(),
        b"10.244.247.0-" + b"4" * 5000: lease(),
        b"999.244.248.0-24": lease(),
        b"not-a-key": lease(),
        b"\xff\xfe10.244.249.0-24": lease(),
        b"10.244.005.0-24": lease(),
        b"10.99.1.0-24": lease(),
        b"10.244.248.0-25": lease(),
    }
    values: list[bytes] = [
        deep,
        b'{"PublicIP":"192.168.77.91","BackendType":"vxlan","BackendData":'
        + b'{"a":' * 100_000
        + b"1"
        + b"}" * 100_000
        + b"}",
        lease(BackendData={"VNI": 1, "VtepMAC": VTEP["VtepMAC"]}).replace(
            b'"VNI": 1', b'"VNI": ' + b"7" * 5000
        ),
        b"9" * 5000,
        b"{nope",
        b"\xff\xfe\xfd",
        b"[1, 2, 3]",
        b'"a string"',
        json.dumps({"PublicIP": "1" * MIB, "BackendType": "vxlan", "BackendData": VTEP}).encode(),
        lease(BackendData={"VNI": 1, "VtepMAC": "a" * MIB}),
        lease("255.255.255.255"),
        lease("224.0.0.1"),
        lease("0.0.0.0"),
        lease("127.0.0.1"),
        lease("224.0.0.251"),
        lease("169.254.1.1"),
        lease("240.0.0.1"),
        lease("10.244.9.9"),
        lease("fc00::1"),
        json.dumps({"PublicIP": 42}).encode(),
        json.dumps({"PublicIP": "192.168.77.92", "BackendType": "x" * MIB}).encode(),
        json.dumps({"PublicIP": "192.168.77.93", "BackendType": "host-gw"}).encode(),
        json.dumps({"PublicIP": "192.168.77.94", "BackendType": "vxlan"}).encode(),
        lease(BackendData={"VNI": 2, "VtepMAC": VTEP["VtepMAC"]}),
        lease(BackendData={"VNI": 1, "VtepMAC": "01:00:5e:00:00:01"}),
        b'{"PublicIP":"192.168.77.95","BackendType":"vxlan","BackendData":{"VNI":NaN,"VtepMAC":"0a:58:0a:f4:fa:01"}}',
        b'{"PublicIP":"192.168.77.96","BackendType":"vxlan","BackendData":{"VNI":1e999,"VtepMAC":"0a:58:0a:f4:fa:01"}}',
        lease("192.168.77.97\n"),
        lease("１92.168.77.98"),
    ]
    for n, value in enumerate(values, start=200):
        items[f"10.244.{n}.0-24".encode()] = value
    return items


def big_leases() -> dict[str, bytes]:
    """Five valid leases of 1 MB each (backend data may be any JSON): programmed, never a wedge."""
    return {
        f"10.244.{n}.0-24": json.dumps(
            {
                "PublicIP": f"192.168.77.{n - 130}",
                "BackendType": "vxlan",
                "BackendData": {**VTEP, "Pad": "p" * MIB},
            }
        ).encode()
        for n in range(235, 240)
    }


def log_size(c: Cluster) -> int:
    return sum(d.log_path.stat().st_size for node in c.nodes for d in (node.lease, node.backend))


def mentions(text: str, key: str) -> int:
    """Lines that name ``key`` (as log lines show it) as a skipped or rejected item."""
    pattern = rf"(?<![\w.-]){re.escape(label(key))}(?![\w.-])"
    return sum(
        1
        for line in text.splitlines()
        if ("skipping" in line or "rejected lease" in line) and re.search(pattern, line)
    )


@pytest.fixture
def cluster2(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(nodes=2)


def test_a_hostile_etcd_corpus_costs_each_bad_item_one_line_and_nothing_else(
    cluster2: Cluster, tmp_path: Path
) -> None:
    c = cluster2
    n1, n2 = c.node(1), c.node(2)
    sub = f"{c.prefix}/subnets/"
    before = log_size(c)
    corpus = etcd_corpus()
    big = big_leases()
    assert len(corpus) >= 40
    try:
        for raw_key, value in corpus.items():
            c.etcd_put(sub.encode() + raw_key, value)
        for name, value in big.items():
            c.etcd_put(sub + name, value)
        # the own key taken over by another writer: noticed, named, restored
        c.etcd_put(
            sub + n1.lease_key,
            json.dumps({"PublicIP": "192.168.77.99", "BackendType": "vxlan", "BackendData": VTEP}),
        )
        for node in c.nodes:  # every big lease programmed: the stream carried 5 MB without a wedge
            wait_until(
                lambda node=node: {f"10.244.{n}.0/24" for n in range(235, 240)} <= routes(node),
                timeout=60,
                what=f"{node.name} routes to the 1 MB leases",
            )
        etcd_http = c.etcd_http
        assert etcd_http is not None
        wait_until(
            lambda: json.loads(etcd_http.get(sub + n1.lease_key) or "{}").get("PublicIP") == n1.public_ip,
            timeout=30,
            what="n1's lease restored",
        )
        wait_until(
            lambda: "192.168.77.99" in c.backend_status(n1).own_lease_conflict,
            timeout=30,
            what="the conflict in n1's GetStatus",
        )
        grpc_corpus = hostile_requests(n1)
        config_corpus = hostile_configs(c, n1, tmp_path)
        # afterwards: both nodes SERVING, good peers programmed, pods talk
        for node in c.nodes:
            assert node.lease.alive() and node.backend.alive()
            assert health_status(node.lease_socket) == "SERVING"
            assert health_status(node.backend_socket) == "SERVING"
            status = c.backend_status(node)
            assert status.synced
            other = n2 if node is n1 else n1
            assert other.subnet in routes(node)
            fdb = {f.get("dst") for f in ip_json(node.ns, "fdb", "show", "dev", "flannel.1", tool="bridge")}
            for bad_ip in (
                "255.255.255.255",
                "224.0.0.1",
                "224.0.0.251",
                "127.0.0.1",
                "0.0.0.0",
                "240.0.0.1",
                "169.254.1.1",
                "192.168.77.99",
            ):
                assert bad_ip not in fdb, (node.name, bad_ip, fdb)
            assert "lost the lease service" not in node.backend.log()
        assert c.mesh_ok(count=3)
        # every bad item named, at most once per daemon, in the logs or in GetStatus
        logs = {d: d.log() for node in c.nodes for d in (node.lease, node.backend)}
        rejected = {r.lease.key for node in c.nodes for r in c.backend_status(node).rejected}
        for raw_key in corpus:
            shown = raw_key.decode("utf-8", "surrogateescape")
            counts = [mentions(text, shown) for text in logs.values()]
            assert all(n <= 1 for n in counts), (shown, counts)
            assert sum(counts) >= 1 or shown in rejected, f"{shown!r} named nowhere"
        conflict_lines = [line for line in n1.lease.log().splitlines() if "OWN_LEASE_CONFLICT" in line]
        assert len(conflict_lines) == 1 and "192.168.77.99" in conflict_lines[0]
        grown = log_size(c) - before
        total = len(corpus) + len(big) + 1 + grpc_corpus + config_corpus
        print(f"hostile corpus: {total} items; the four daemon logs grew by {grown} bytes")
        assert total >= 60
        assert grown < LOG_GROWTH_BOUND, grown
    finally:
        assert c.etcd_http is not None
        for raw_key in [*corpus, *(k.encode() for k in big)]:
            c.etcd_http.delete(sub.encode() + raw_key)


def routes(node: Node) -> set[str]:
    return {r["dst"] for r in ip_json(node.ns, "route", "show")}


def hostile_requests(node: Node) -> int:
    """gRPC requests a client may send by mistake or malice: each gets the status code that says what to do
    (never UNKNOWN, never UNAVAILABLE for a request that cannot succeed). Returns how many were sent."""
    sent = 0
    options = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
    with grpc.insecure_channel(f"unix:{node.lease_socket}", options=options) as channel:
        stub = lease_pb2_grpc.LeaseServiceStub(channel)
        acquire: list[tuple[dict[str, Any], grpc.StatusCode]] = [
            ({"backend_data": json.dumps({"Pad": "p" * (3 * MIB)})}, grpc.StatusCode.RESOURCE_EXHAUSTED),
            ({"backend_data": "[" * 100_000 + "]" * 100_000}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"backend_data": "7" * 5000}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"backend_data": '{"VNI": NaN}'}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"backend_data": "{nope"}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"backend_v6_data": "[" * 5000}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"backend_type": "x" * MIB}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"mtu": 0}, grpc.StatusCode.OUT_OF_RANGE),
            ({"mtu": 2**32 - 1}, grpc.StatusCode.OUT_OF_RANGE),
            ({"backend_data": json.dumps({"Pad": "p" * (17 * MIB)})}, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ]
        for fields, code in acquire:
            request = lease_pb2.AcquireLeaseRequest(**{"backend_type": "vxlan", "mtu": 1450, **fields})
            with pytest.raises(grpc.RpcError) as info:
                stub.AcquireLease(request, timeout=30)
            assert info.value.code() == code, (list(fields), info.value.code(), info.value.details()[:200])
            sent += 1
        with pytest.raises(grpc.RpcError) as info:
            next(iter(stub.WatchLeases(lease_pb2.WatchLeasesRequest(max_batch=10**9), timeout=10)))
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        sent += 1
        store = base64.urlsafe_b64decode(_first_cursor(stub) + "==").decode().split("|")[1]
        for cursor in (
            _cursor(store, 0),
            _cursor("etcd:00000000deadbeef:/coreos.com/network", 5),
            _cursor(store, 10**30),
            "A" * 100_000,
            "v1|||",
            "%%%",
        ):
            first = next(iter(stub.WatchLeases(lease_pb2.WatchLeasesRequest(cursor=cursor), timeout=10)))
            assert first.kind == Msg.SNAPSHOT and first.reset and first.reason == Msg.CURSOR_INVALID
            sent += 1
        for method in ("AcquireLease", "GetNetworkConfig", "Describe", "ReportBackendStatus", "WatchLeases"):
            raw = (
                channel.unary_unary(f"/flannel.v1.LeaseService/{method}")
                if method != "WatchLeases"
                else channel.unary_stream(f"/flannel.v1.LeaseService/{method}")
            )
            with pytest.raises(grpc.RpcError) as info:
                result = raw(b"\xff\xff\xff\xff\x0f", timeout=10)
                if method == "WatchLeases":
                    next(iter(result))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, info.value.code())
            sent += 1
    with grpc.insecure_channel(f"unix:{node.backend_socket}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/flannel.v1.BackendService/GetStatus")(b"\xff\xff\xff\xff\x0f", timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        sent += 1
    assert "Traceback" not in node.lease.log() and "Traceback" not in node.backend.log()
    return sent


def _first_cursor(stub: lease_pb2_grpc.LeaseServiceStub) -> str:
    for msg in stub.WatchLeases(lease_pb2.WatchLeasesRequest(), timeout=30):
        if msg.cursor:
            return msg.cursor
    raise AssertionError("no cursor")


def _cursor(store: str, revision: int) -> str:
    return base64.urlsafe_b64encode(f"v1|{store}|{revision}".encode()).decode().rstrip("=")


def hostile_configs(c: Cluster, node: Node, tmp_path: Path) -> int:
    """A lease service started against a prefix holding a bad network config stays up, NOT_SERVING, and
    says why (once per reason); a good config makes it SERVING. Returns how many configs were tried."""
    prefix = "/hostile-conf"
    configs: list[tuple[bytes, str]] = [
        (b"[" * 100_000 + b"]" * 100_000, "TOO_DEEP"),
        (
            json.dumps({"Network": "10.50.0.0/16", "Backend": {"Type": "vxlan"}}).encode()[:-1]
            + b', "SubnetLen": '
            + b"2" * 5000
            + b"}",
            "NUMBER_TOO_LONG",
        ),
        (b'{"Network": NaN, "Backend": {"Type": "vxlan"}}', "NUMBER_NOT_FINITE"),
        (b"\xff\xfe{}", "NOT_UTF8"),
        (
            json.dumps(
                {"Network": "10.50.0.0/16", "Backend": {"Type": "vxlan"}, "Pad": "p" * (MIB + 10)}
            ).encode(),
            "TOO_LARGE",
        ),
        (json.dumps({"Network": ["10.50.0.0/16"], "Backend": {"Type": "vxlan"}}).encode(), "Network must be"),
        (
            json.dumps(
                {"Network": "10.50.0.0/16", "SubnetMin": {"a": 1}, "Backend": {"Type": "vxlan"}}
            ).encode(),
            "SubnetMin must be",
        ),
        (json.dumps({"Network": "10.50.0.0/16", "Backend": "vxlan"}).encode(), "Backend must be"),
    ]
    run_dir = tmp_path / "hostile-conf"
    run_dir.mkdir()
    assert c.etcd is not None
    daemon = Daemon(
        "lease_service",
        [
            "--run-dir",
            str(run_dir),
            "--etcd-endpoints",
            c.etcd.endpoint,
            "--etcd-prefix",
            prefix,
            "--iface",
            "eth0",
        ],
        tmp_path / "hostile-conf.log",
        prefix=["ip", "netns", "exec", node.ns],
    )
    c.etcd_put(f"{prefix}/config", configs[0][0])
    daemon.start()
    try:
        for text, reason in configs:
            c.etcd_put(f"{prefix}/config", text)
            wait_until(
                lambda reason=reason: reason in daemon.log(), timeout=30, what=f"config refused: {reason}"
            )
            assert daemon.alive(), daemon.log()[-2000:]
            assert health_status(run_dir / "lease.sock") == "NOT_SERVING"
        c.etcd_put(f"{prefix}/config", json.dumps({"Network": "10.50.0.0/16", "Backend": {"Type": "vxlan"}}))
        wait_until(lambda: health_status(run_dir / "lease.sock") == "SERVING", timeout=30, what="SERVING")
        log = daemon.log()
        assert "Traceback" not in log and len(log) < 16 * 1024, len(log)
    finally:
        daemon.stop()
    return len(configs)


P = "flannel.alpha.coreos.com/"


def kube_corpus() -> dict[str, dict[str, Any]]:
    """Node name to (pod CIDR, annotations): every one managed by a kube subnet manager, every one bad."""

    def notes(**extra: str) -> dict[str, str]:
        return {
            P + "kube-subnet-manager": "true",
            P + "backend-type": "vxlan",
            P + "public-ip": "192.168.77.60",
            P + "backend-data": json.dumps(VTEP),
            **{P + k.replace("_", "-"): v for k, v in extra.items()},
        }

    return {
        "h1": {"cidr": "10.244.201.0/24", "notes": notes(public_ip="1" * 200_000)},
        "h2": {"cidr": "10.244.202.0/24", "notes": notes(backend_data="[" * 100_000 + "]" * 100_000)},
        "h3": {"cidr": "10.244.203.0/24", "notes": notes(backend_data='{"VNI":' + "7" * 5000 + "}")},
        "h4": {"cidr": "10.244.204.0/24", "notes": notes(backend_data='{"VNI":NaN}')},
        "h5": {"cidr": "10.244.205.0/24", "notes": notes(public_ip="255.255.255.255")},
        "h6": {"cidr": "10.244.206.0/24", "notes": notes(public_ip="１92.168.77.61")},
        "h7": {"cidr": "10.244.207.0/24", "notes": notes(public_ip="192.168.77.62\n")},
        "h8": {"cidr": "10.244.208.0/24", "notes": notes(backend_type="x" * 1000)},
        "h9": {"cidr": "10.244.209.0/33", "notes": notes()},
        "h10": {"cidr": "10.99.0.0/24", "notes": notes()},
        "h11": {"cidr": "10.244.211.0/24", "notes": {P + "kube-subnet-manager": "true"}},
        "h12": {"cidr": "10.244.212.0/24", "notes": notes(backend_data="{nope")},
        "h13": {"cidr": "10.244.213.0/24", "notes": notes(public_ip="224.0.0.1")},
    }


FRAMES = [
    b"{nope",
    b"[" * 100_000,
    b"\xff\xfe",
    b'{"type":"ADDED","object":[]}',
    b'{"type":"MODIFIED","object":{"metadata":{"name":"n9","resourceVersion":"abc"}}}',
]


def kube_mentions(text: str, name: str) -> list[int]:
    """Per run of the daemon (a restarted process remembers nothing): lines naming node ``name``."""
    pattern = rf"(?<![\w.-]){re.escape(label(name))}(?![\w.-])"
    runs = re.split(r"\n(?=\S+ \S+ INFO flannel_rpc.serve: serving )", text)
    return [
        sum(
            1
            for line in run.splitlines()
            if ("skipping node" in line or "rejected lease" in line) and re.search(pattern, line)
        )
        for run in runs
    ]


def test_hostile_nodes_frames_and_refusals_in_kube_mode_cost_one_line_each(
    make_cluster: Callable[..., Cluster],
) -> None:
    from flannel_testkit.kubeapi import KubeApiControl, make_node

    c = make_cluster(nodes=2, kube=True)
    n1, n2 = c.node(1), c.node(2)
    before = log_size(c)
    corpus = kube_corpus()
    for name, item in corpus.items():
        hostile = make_node(name, item["cidr"], annotations=item["notes"])
        c.kube_api(partial(KubeApiControl.create_node, node=hostile))
    for number, frame in enumerate(
        FRAMES, 1
    ):  # a frame that is not a JSON event: the watch restarts (relist)

        def relisted(frame: bytes = frame, number: int = number) -> bool:
            # injected again until each node read it: a watch that is just restarting may miss one
            if all(node.lease.log().count("unusable frame") >= number for node in c.nodes):
                return True
            c.kube_api(lambda api: api.inject_frame(frame))
            return False

        wait_until(relisted, timeout=60, interval=1.0, what=f"both nodes relisted after frame {number}")
    # an invalid public-ip-overwrite on n1 is refused by name, never published
    c.kube_api(
        lambda api: api.patch_node(
            n1.name, {"metadata": {"annotations": {P + "public-ip-overwrite": "not-an-ip" + "x" * 1000}}}
        )
    )
    c.restart_backend(n1)
    wait_until(lambda: "PUBLIC_IP_OVERWRITE_INVALID" in n1.lease.log(), timeout=30, what="overwrite refused")
    notes = c.kube_api(lambda api: api.get_node(n1.name))["metadata"]["annotations"]
    assert notes[P + "public-ip"] == n1.public_ip
    # 401 and 400 on list: logged, retried, NOT_SERVING meanwhile, never an exit
    refusals = 0
    for code in (401, 400):
        c.kube_api(partial(KubeApiControl.deny, verb="list", resource="nodes", code=code))
        n2.lease.stop()
        n2.lease.start()
        wait_until(lambda code=code: f"({code})" in n2.lease.log(), timeout=30, what=f"{code} logged")
        assert n2.lease.alive() and health_status(n2.lease_socket) == "NOT_SERVING"
        c.kube_api(lambda api: api.allow_all())
        c.wait_lease_service(n2, timeout=60)
        refusals += 1
    c.wait_backend(n2, timeout=60)
    for node in c.nodes:
        assert node.lease.alive() and node.backend.alive()
        wait_until(
            lambda node=node: health_status(node.backend_socket) == "SERVING",
            timeout=60,
            what=f"{node.name} backend SERVING",
        )
        assert health_status(node.lease_socket) == "SERVING"
        other = n2 if node is n1 else n1
        wait_until(
            lambda node=node, other=other: other.subnet in routes(node), timeout=30, what="peer routed"
        )
        fdb = {f.get("dst") for f in ip_json(node.ns, "fdb", "show", "dev", "flannel.1", tool="bridge")}
        assert not {"255.255.255.255", "224.0.0.1"} & fdb, fdb
    assert c.mesh_ok(count=3)
    logs = [d.log() for node in c.nodes for d in (node.lease, node.backend)]
    for name in corpus:
        counts = [kube_mentions(text, name) for text in logs]
        assert all(n <= 1 for runs in counts for n in runs) and sum(map(sum, counts)) >= 1, (name, counts)
    assert all("Traceback" not in text for text in logs)
    grown = log_size(c) - before
    print(f"kube corpus: {len(corpus) + len(FRAMES) + 1 + refusals} items; logs grew by {grown} bytes")
    assert grown < LOG_GROWTH_BOUND, grown


def test_a_writer_putting_a_thousand_corrupt_keys_costs_a_bounded_log(
    make_cluster: Callable[..., Cluster],
) -> None:
    # A soak found this: a writer adding a new corrupt key fifty times a second made the lease service
    # write fifty lines a second (each key is new, so once per key bounded nothing).
    c = make_cluster(nodes=1)
    n1 = c.node(1)
    sub = f"{c.prefix}/subnets/"
    keys = [f"{sub}10.{256 + n // 256}.{n % 256}.0-24" for n in range(1000)]
    marker = f"{sub}10.244.190.0-24"
    gate = FloodGate()
    try:
        for key in keys:
            c.etcd_put(key, lease())
        c.etcd_put(marker, lease("192.168.77.88"))  # watched after every corrupt key: a good lease
        wait_until(lambda: "10.244.190.0/24" in routes(n1), timeout=60, what="the good lease after them")
        skipped = [line for line in n1.lease.log().splitlines() if "skipping corrupt lease" in line]
        assert gate.burst <= len(skipped) <= gate.burst + 5, len(skipped)
        assert "further lines like this: at most 10 a minute" in skipped[gate.burst - 1]
        assert n1.lease.alive() and health_status(n1.lease_socket) == "SERVING"
    finally:
        assert c.etcd_http is not None
        for key in [*keys, marker]:
            c.etcd_http.delete(key)
