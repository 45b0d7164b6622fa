"""flannel-lease-service with --kube-subnet-mgr against a Kubernetes API (the fake one, backed by the
real etcd), driven over its unix socket: leases from Node objects, flannel's annotations, the stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.kubeapi import KubeApiControl, make_node, running
from flannel_testkit.leasestream import Stream
from flannel_testkit.processes import Daemon, health_status
from flannel_testkit.wait import wait_until
from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

Msg = lease_pb2.WatchLeasesResponse
UPSERT, REMOVE = lease_pb2.LeaseEvent.UPSERT, lease_pb2.LeaseEvent.REMOVE
P = "flannel.alpha.coreos.com/"
NET_CONF = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
VXLAN_DATA = '{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}'


def managed(name: str, cidr: str, ip: str, **extra: str) -> dict[str, Any]:
    """A node another flannel node has already annotated."""
    notes = {
        P + "kube-subnet-manager": "true",
        P + "backend-type": "vxlan",
        P + "public-ip": ip,
        P + "backend-data": '{"VNI":1,"VtepMAC":"0a:58:0a:f4:09:09"}',
        **extra,
    }
    return make_node(name, cidr, annotations=notes)


class KubeLeaseService:
    def __init__(
        self,
        api: KubeApiControl,
        tmp: Path,
        node: str = "n1",
        net_conf: object = NET_CONF,
        kubeconfig: Path | None = None,
    ) -> None:
        self.run_dir = tmp / "run"
        self.run_dir.mkdir(exist_ok=True)
        self.conf = tmp / "net-conf.json"
        self.conf.write_text(net_conf if isinstance(net_conf, str) else json.dumps(net_conf))
        self.socket = self.run_dir / "lease.sock"
        where = ["--kubeconfig-file", str(kubeconfig)] if kubeconfig else ["--kube-api-url", api.url]
        self.daemon = Daemon(
            "lease_service",
            [
                "--kube-subnet-mgr",
                *where,
                "--net-config-path",
                str(self.conf),
                "--node-name",
                node,
                "--public-ip",
                "192.168.70.1",
                "--run-dir",
                str(self.run_dir),
            ],
            tmp / "lease.log",
        )

    def start(self, wait: bool = True) -> KubeLeaseService:
        self.daemon.start()
        if wait:
            try:
                self.daemon.wait_serving(self.socket, timeout=60)
            except BaseException:
                self.daemon.kill()  # the caller never got it to clean up: no lease service left running
                raise
        return self

    def acquire(self, timeout: float = 20) -> lease_pb2.Lease:
        with grpc.insecure_channel(f"unix:{self.socket}") as ch:
            return (
                lease_pb2_grpc.LeaseServiceStub(ch)
                .AcquireLease(
                    lease_pb2.AcquireLeaseRequest(backend_type="vxlan", backend_data=VXLAN_DATA, mtu=1450),
                    timeout=timeout,
                )
                .lease
            )


@pytest.fixture
def api(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[KubeApiControl]:
    with running(etcd.endpoint, prefix, log_path=tmp_path / "apiserver.log") as server:
        yield server.control


@pytest.fixture
def services() -> Iterator[list[KubeLeaseService]]:
    made: list[KubeLeaseService] = []
    yield made
    for service in made:
        service.daemon.kill()


def patches(api: KubeApiControl) -> list[dict[str, str]]:
    return [r for r in api.requests() if r["method"] == "PATCH"]


def test_acquire_annotates_the_node_through_status_once_and_a_restart_patches_nothing(
    api: KubeApiControl, tmp_path: Path, services: list[KubeLeaseService]
) -> None:
    api.create_node(make_node("n1", "10.244.7.0/24"))
    service = KubeLeaseService(api, tmp_path)
    services.append(service.start())
    lease = service.acquire()
    assert (lease.key, lease.subnet, lease.public_ip, lease.node_name) == (
        "n1",
        "10.244.7.0/24",
        "192.168.70.1",
        "n1",
    )
    node = api.get_node("n1")
    notes = node["metadata"]["annotations"]
    assert notes[P + "kube-subnet-manager"] == "true" and notes[P + "backend-type"] == "vxlan"
    assert (
        json.loads(notes[P + "backend-data"]) == json.loads(VXLAN_DATA)
        and notes[P + "public-ip"] == "192.168.70.1"
    )
    assert notes["node.alpha.kubernetes.io/ttl"] == "0"  # kubelet's annotations are kept
    condition = next(c for c in node["status"]["conditions"] if c["type"] == "NetworkUnavailable")
    assert (condition["status"], condition["reason"]) == ("False", "FlannelIsUp")
    # annotations and the condition in one strategic-merge patch of the status subresource
    assert [r["path"] for r in patches(api)] == ["/api/v1/nodes/n1/status"]
    assert all(r["content_type"].startswith("application/strategic-merge-patch+json") for r in patches(api))
    assert "FLANNEL_SUBNET=10.244.7.1/24" in (service.run_dir / "subnet.env").read_text()
    count = len(patches(api))

    service.daemon.kill()
    service.start()
    assert service.acquire().subnet == "10.244.7.0/24"
    assert len(patches(api)) == count, "nothing changed, so nothing may be patched"


def test_a_kubeconfig_file_alone_reaches_the_api(
    api: KubeApiControl, tmp_path: Path, services: list[KubeLeaseService]
) -> None:
    api.create_node(make_node("n1", "10.244.7.0/24"))
    (tmp_path / "token").write_text("secret-token\n")
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
current-context: test
contexts: [{{name: test, context: {{cluster: fake, user: flannel}}}}]
clusters: [{{name: fake, cluster: {{server: "{api.url}"}}}}]
users: [{{name: flannel, user: {{tokenFile: token}}}}]
""")
    service = KubeLeaseService(api, tmp_path, kubeconfig=config)
    services.append(service.start())
    assert service.acquire().subnet == "10.244.7.0/24"
    assert {r["path"] for r in patches(api)} == {"/api/v1/nodes/n1/status"}


def test_acquire_waits_for_the_pod_cidr_and_says_so(
    api: KubeApiControl, tmp_path: Path, services: list[KubeLeaseService]
) -> None:
    api.create_node(make_node("n1"))
    service = KubeLeaseService(api, tmp_path)
    services.append(service.start())
    result: list[lease_pb2.Lease] = []
    waiter = threading.Thread(target=lambda: result.append(service.acquire(timeout=30)), daemon=True)
    waiter.start()
    wait_until(lambda: "node n1 has no pod CIDR yet" in service.daemon.log(), what="the wait logged")
    api.patch_node(
        "n1",
        {"spec": {"podCIDR": "10.244.8.0/24", "podCIDRs": ["10.244.8.0/24"]}},
        content_type="application/merge-patch+json",
    )
    waiter.join(30)
    assert result and result[0].subnet == "10.244.8.0/24"


def test_the_stream_follows_nodes_without_duplicates_across_drops_and_a_410_relist(
    api: KubeApiControl, tmp_path: Path, services: list[KubeLeaseService], streams: list[Stream]
) -> None:
    api.create_node(make_node("n1", "10.244.1.0/24"))
    service = KubeLeaseService(api, tmp_path)
    services.append(service.start())
    stream = Stream(service.socket)
    streams.append(stream)
    wait_until(stream.synced, what="SYNCED")

    api.create_node(make_node("n2"))  # not managed: no lease
    api.patch_node("n2", {"spec": {"podCIDR": "10.244.2.0/24"}}, content_type="application/merge-patch+json")
    api.patch_node(
        "n2",
        {"metadata": {"annotations": managed("n2", "", "192.168.70.2")["metadata"]["annotations"]}},
        status=True,
    )  # now a lease
    api.patch_node(
        "n2",
        {"metadata": {"annotations": {P + "backend-data": '{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:02"}'}}},
        status=True,
    )  # changed lease
    api.patch_node(
        "n2", {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "beat"}]}}, status=True
    )  # no lease change: no event
    api.delete_node("n2")
    want = [(UPSERT, "n2"), (UPSERT, "n2"), (REMOVE, "n2")]
    wait_until(lambda: stream.events() == want, what=f"{want}")

    assert api.drop_watches() >= 1  # a dropped watch resumes
    api.create_node(managed("n3", "10.244.3.0/24", "192.168.70.3"))
    wait_until(lambda: stream.events() == [*want, (UPSERT, "n3")], what="n3 after a dropped watch")

    api.deny("watch", "nodes")  # away while n3 goes and history is compacted
    api.drop_watches()
    api.delete_node("n3")
    api.create_node(managed("n4", "10.244.4.0/24", "192.168.70.4"))
    api.compact()
    api.allow_all()
    api.drop_watches()
    final = [*want, (UPSERT, "n3"), (UPSERT, "n4"), (REMOVE, "n3")]
    wait_until(
        lambda: sorted(stream.events()[len(want) + 1 :]) == sorted(final[len(want) + 1 :]),
        timeout=30,
        what="the relist's difference",
    )
    assert "relisting" in service.daemon.log()
    assert len(stream.events()) == len(final), stream.events()


def test_bad_nodes_are_skipped_and_named(
    api: KubeApiControl, tmp_path: Path, services: list[KubeLeaseService], streams: list[Stream]
) -> None:
    api.create_node(make_node("n1", "10.244.1.0/24"))
    api.create_node(managed("bad-json", "10.244.5.0/24", "192.168.70.5", **{P + "backend-data": "{nope"}))
    api.create_node(managed("outside", "10.99.0.0/24", "192.168.70.6"))
    api.create_node(managed("no-cidr", "", "192.168.70.7"))
    api.create_node(managed("bad-ip", "10.244.9.0/24", "not-an-ip"))
    api.create_node(managed("good", "10.244.6.0/24", "192.168.70.8"))
    service = KubeLeaseService(api, tmp_path)
    services.append(service.start())
    stream = Stream(service.socket)
    streams.append(stream)
    wait_until(stream.synced, what="SYNCED")
    snapshot = {e.lease.key for m in stream.msgs if m.kind == Msg.SNAPSHOT for e in m.events}
    assert snapshot == {"good"}
    log = service.daemon.log()
    for name in ("bad-json", "outside", "no-cidr", "bad-ip"):
        assert f"skipping node {name}" in log
    assert service.daemon.alive()


def test_a_forbidden_patch_names_the_missing_permission(
    api: KubeApiControl, tmp_path: Path, services: list[KubeLeaseService]
) -> None:
    api.create_node(make_node("n1", "10.244.7.0/24"))
    api.deny("patch", "nodes/status")
    service = KubeLeaseService(api, tmp_path)
    services.append(service.start())
    with pytest.raises(grpc.RpcError) as err:
        service.acquire()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "nodes/status patch" in err.value.details()
    assert service.daemon.alive()


def test_a_malformed_net_conf_keeps_the_service_not_serving_and_says_why(
    api: KubeApiControl, tmp_path: Path, services: list[KubeLeaseService]
) -> None:
    service = KubeLeaseService(
        api, tmp_path, net_conf='{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"'
    )
    services.append(service.start(wait=False))
    wait_until(
        lambda: "net-conf.json: not valid JSON" in service.daemon.log(), timeout=60, what="the reason logged"
    )
    assert health_status(service.socket) == "NOT_SERVING"
    service.conf.write_text(json.dumps(NET_CONF))
    wait_until(lambda: health_status(service.socket) == "SERVING", timeout=20, what="SERVING once fixed")


@pytest.mark.netns
def test_three_nodes_in_kube_mode_ping_across_nodes(tmp_path: Path) -> None:
    from flannel_testkit.cluster import Cluster

    with Cluster(tmp_path / "cluster", nodes=3, kube=True) as cluster:
        for node in cluster.nodes:
            assert node.subnet == f"10.244.{node.index}.0/24"  # the node's spec.podCIDR
            notes = cluster.kube_api(partial(KubeApiControl.get_node, name=node.name))["metadata"][
                "annotations"
            ]
            assert notes[P + "public-ip"] == node.public_ip and notes[P + "kube-subnet-manager"] == "true"
        for src in cluster.nodes:
            for dst in cluster.nodes:
                if src is not dst:
                    assert cluster.ping(src, dst.pod_ip, count=3).received == 3, (src.name, dst.name)
