"""flannel-lease-service as a real process against a real etcd, driven over its unix socket by a
gRPC client and by the real grpcurl binary."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.grpcurl import grpcurl
from flannel_testkit.leasestream import Stream
from flannel_testkit.processes import health_status, lone_lease_service
from flannel_testkit.wait import wait_until
from lease_service.etcd import EtcdClient, EtcdSettings
from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

Msg = lease_pb2.WatchLeasesResponse
UPSERT, REMOVE = lease_pb2.LeaseEvent.UPSERT, lease_pb2.LeaseEvent.REMOVE
CONFIG = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
VXLAN_DATA = '{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}'


def put(etcd: EtcdServer, key: str, value: bytes | str, ttl: int = 0) -> None:
    async def go() -> None:
        async with EtcdClient(EtcdSettings(endpoints=(etcd.endpoint,))) as client:
            lease = await client.grant(ttl) if ttl else 0
            await client.put(key, value.encode() if isinstance(value, str) else value, lease=lease)

    asyncio.run(go())


def delete(etcd: EtcdServer, key: str) -> None:
    async def go() -> None:
        async with EtcdClient(EtcdSettings(endpoints=(etcd.endpoint,))) as client:
            await client.delete(key)

    asyncio.run(go())


class LeaseNode:
    """One lease service process and what a test needs to talk to it."""

    def __init__(self, etcd: EtcdServer, prefix: str, run_dir: Path, public_ip: str, *extra: str) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.socket = run_dir / "lease.sock"
        self.daemon = lone_lease_service(
            run_dir,
            etcd.endpoint,
            prefix,
            run_dir.parent / f"{run_dir.name}.log",
            "--etcd-call-timeout",
            "1",
            *extra,
            public_ip=public_ip,
        )

    def start(self, wait: bool = True) -> LeaseNode:
        self.daemon.start()
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self) -> None:
        self.daemon.wait_serving(self.socket)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket}")

    def acquire(self, mtu: int = 1450, data: str = VXLAN_DATA, backend: str = "vxlan") -> lease_pb2.Lease:
        with self.channel() as ch:
            stub = lease_pb2_grpc.LeaseServiceStub(ch)
            return stub.AcquireLease(
                lease_pb2.AcquireLeaseRequest(backend_type=backend, backend_data=data, mtu=mtu), timeout=15
            ).lease


MakeLeaseNode = Callable[..., LeaseNode]


@pytest.fixture
def lease_node(tmp_path: Path) -> Iterator[MakeLeaseNode]:
    """``lease_node(etcd, prefix, public_ip, *flags, name="n1", start=True)``: a lease service in
    ``tmp_path / name``, started and serving unless ``start`` is False; every one is killed afterwards."""
    made: list[LeaseNode] = []

    def make(
        etcd: EtcdServer, prefix: str, public_ip: str, *extra: str, name: str = "n1", start: bool = True
    ) -> LeaseNode:
        node = LeaseNode(etcd, prefix, tmp_path / name, public_ip, *extra)
        made.append(node)
        return node.start() if start else node

    yield make
    for node in made:
        node.daemon.kill()


@pytest.fixture
def configured(etcd: EtcdServer, prefix: str) -> str:
    put(etcd, f"{prefix}/config", json.dumps(CONFIG))
    return prefix


def test_acquire_writes_subnet_env_and_a_restart_gets_the_same_subnet(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    node = lease_node(etcd, configured, "192.168.50.1", "--ip-masq")
    lease = node.acquire(mtu=1450)
    assert re.fullmatch(r"10\.244\.\d+\.0/24", lease.subnet) and lease.public_ip == "192.168.50.1"
    env = dict(line.split("=", 1) for line in (node.run_dir / "subnet.env").read_text().splitlines())
    first_ip = lease.subnet.replace(".0/24", ".1/24")
    assert env == {
        "FLANNEL_NETWORK": "10.244.0.0/16",
        "FLANNEL_SUBNET": first_ip,
        "FLANNEL_MTU": "1450",
        "FLANNEL_IPMASQ": "true",
    }
    node.daemon.kill()
    node.start()
    assert node.acquire().subnet == lease.subnet


def test_the_lease_is_stored_as_flannel_stores_it(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    node = lease_node(etcd, configured, "192.168.50.7")
    lease = node.acquire()

    async def read() -> tuple[bytes, int, int]:
        async with EtcdClient(EtcdSettings(endpoints=(etcd.endpoint,))) as client:
            kv, _ = await client.get(f"{configured}/subnets/{lease.key}")
            assert kv is not None
            return kv.value, kv.lease, await client.time_to_live(kv.lease)

    value, etcd_lease, ttl = asyncio.run(read())
    assert json.loads(value) == {
        "PublicIP": "192.168.50.7",
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": "0a:58:0a:f4:01:01"},
    }
    assert etcd_lease != 0 and 23 * 3600 < ttl <= 24 * 3600
    assert lease.key == lease.subnet.replace("/", "-")


def test_reservations_are_never_taken_by_another_node(
    etcd: EtcdServer, prefix: str, lease_node: MakeLeaseNode
) -> None:
    # Only two subnets can be leased: 10.5.1.0/24 (reserved for .99) and 10.5.2.0/24.
    put(
        etcd,
        f"{prefix}/config",
        json.dumps({**CONFIG, "Network": "10.5.0.0/16", "SubnetMin": "10.5.1.0", "SubnetMax": "10.5.2.0"}),
    )
    put(etcd, f"{prefix}/subnets/10.5.1.0-24", '{"PublicIP":"192.168.50.99"}')
    other = lease_node(etcd, prefix, "192.168.50.1")
    assert other.acquire().subnet == "10.5.2.0/24"
    owner = lease_node(etcd, prefix, "192.168.50.99", name="n2")
    lease = owner.acquire()
    assert lease.subnet == "10.5.1.0/24" and not lease.HasField("expiration")


def test_bad_acquire_requests_are_refused_with_the_field_named(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    node = lease_node(etcd, configured, "192.168.50.1")
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({"backend": "host-gw"}, grpc.StatusCode.INVALID_ARGUMENT, "backend_type"),
        ({"data": "", "mtu": 70000}, grpc.StatusCode.OUT_OF_RANGE, "mtu"),
        ({"mtu": 0}, grpc.StatusCode.OUT_OF_RANGE, "mtu"),
        ({"data": "{nope"}, grpc.StatusCode.INVALID_ARGUMENT, "backend_data"),
    ]
    for kwargs, code, word in cases:
        with pytest.raises(grpc.RpcError) as err:
            node.acquire(**kwargs)
        assert err.value.code() == code and word in err.value.details()
    with node.channel() as ch, pytest.raises(grpc.RpcError) as err:
        next(
            iter(
                lease_pb2_grpc.LeaseServiceStub(ch).WatchLeases(lease_pb2.WatchLeasesRequest(max_batch=10**9))
            )
        )
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert node.daemon.alive()


def test_stream_snapshot_then_deltas_including_expiry_and_corrupt_values_skipped(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode, streams: list[Stream]
) -> None:
    subnets = f"{configured}/subnets"
    put(etcd, f"{subnets}/10.244.7.0-24", '{"PublicIP":"192.168.50.7","BackendType":"vxlan"}')
    node = lease_node(etcd, configured, "192.168.50.1")
    stream = Stream(node.socket)
    streams.append(stream)
    wait_until(lambda: any(m.kind == Msg.SYNCED for m in stream.msgs), what="SYNCED")
    assert stream.snapshot_keys() == {"10.244.7.0-24"}
    corrupt = {
        "10.244.20.0-24": "not json",
        "10.244.21.0-24": '{"PublicIP": 12}',
        "banana": '{"PublicIP":"192.168.50.9"}',
        "10.99.0.0-24": '{"PublicIP":"192.168.50.9"}',
        "10.244.22.0-26": '{"PublicIP":"192.168.50.9"}',
    }
    for key, value in corrupt.items():
        put(etcd, f"{subnets}/{key}", value)
    put(etcd, f"{subnets}/10.244.8.0-24", '{"PublicIP":"192.168.50.8","BackendType":"vxlan"}', ttl=2)
    wait_until(lambda: (REMOVE, "10.244.8.0-24") in stream.events(), timeout=15, what="expiry removal")
    assert stream.events() == [(UPSERT, "10.244.8.0-24"), (REMOVE, "10.244.8.0-24")]
    log = node.daemon.log()
    for key in corrupt:
        assert f"{subnets}/{key}" in log
    assert node.daemon.alive() and stream.error is None


def test_own_lease_deleted_is_reacquired_and_watchers_are_told(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    node = lease_node(etcd, configured, "192.168.50.1")
    lease = node.acquire()
    kinds: list[int] = []
    import threading

    with node.channel() as ch:
        call = lease_pb2_grpc.LeaseServiceStub(ch).WatchLease(lease_pb2.WatchLeaseRequest())

        def read() -> None:
            try:
                for event in call:
                    kinds.append(event.kind)
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_until(lambda: kinds == [lease_pb2.WatchLeaseResponse.CURRENT], what="CURRENT")
        delete(etcd, f"{configured}/subnets/{lease.key}")
        wait_until(lambda: lease_pb2.WatchLeaseResponse.REACQUIRED in kinds, what="REACQUIRED")
        call.cancel()
        reader.join(5)
    assert kinds[:3] == [
        lease_pb2.WatchLeaseResponse.CURRENT,
        lease_pb2.WatchLeaseResponse.LOST,
        lease_pb2.WatchLeaseResponse.REACQUIRED,
    ]
    assert node.acquire().subnet == lease.subnet  # the same subnet came back: it was free


PREFIX = "/coreos.com/network"


def node_with_one_peer(
    etcd: EtcdServer, lease_node: MakeLeaseNode, streams: list[Stream]
) -> tuple[LeaseNode, Stream]:
    """A lease service on ``etcd`` with one peer lease (10.244.7.0/24), and a stream past SYNCED."""
    put(etcd, f"{PREFIX}/config", json.dumps(CONFIG))
    put(etcd, f"{PREFIX}/subnets/10.244.7.0-24", '{"PublicIP":"192.168.50.7","BackendType":"vxlan"}')
    node = lease_node(etcd, PREFIX, "192.168.50.1")
    stream = Stream(node.socket)
    streams.append(stream)
    wait_until(stream.synced, what="SYNCED")
    return node, stream


def test_a_cursor_resumes_across_a_lease_service_restart_and_compaction_forces_a_snapshot(
    own_etcd: EtcdServer, lease_node: MakeLeaseNode, streams: list[Stream]
) -> None:
    prefix = PREFIX
    node, first = node_with_one_peer(own_etcd, lease_node, streams)
    cursor = first.last_cursor()
    node.daemon.kill()
    put(own_etcd, f"{prefix}/subnets/10.244.9.0-24", '{"PublicIP":"192.168.50.9","BackendType":"vxlan"}')
    delete(own_etcd, f"{prefix}/subnets/10.244.7.0-24")
    node.start()
    resumed = Stream(node.socket, cursor)
    streams.append(resumed)
    wait_until(lambda: resumed.msgs, what="a resumed message")
    assert resumed.msgs[0].kind == Msg.DELTA
    assert sorted(resumed.events()) == [(UPSERT, "10.244.9.0-24"), (REMOVE, "10.244.7.0-24")]

    async def compact() -> None:
        async with EtcdClient(EtcdSettings(endpoints=(own_etcd.endpoint,))) as client:
            await client.put("/unrelated", b"x")
            _, revision = await client.get("/unrelated")
            await client.compact(revision)

    node.daemon.kill()
    asyncio.run(compact())
    node.start()
    fresh = Stream(node.socket, cursor)
    streams.append(fresh)
    wait_until(lambda: any(m.kind == Msg.SYNCED for m in fresh.msgs), what="SYNCED after compaction")
    assert (fresh.msgs[0].kind, fresh.msgs[0].reset, fresh.msgs[0].reason) == (
        Msg.SNAPSHOT,
        True,
        Msg.CURSOR_COMPACTED,
    )
    assert fresh.snapshot_keys() == {"10.244.9.0-24"}


def test_etcd_killed_and_restarted_mid_stream_loses_nothing_and_removes_nothing(
    own_etcd: EtcdServer, lease_node: MakeLeaseNode, streams: list[Stream]
) -> None:
    prefix = PREFIX
    node, stream = node_with_one_peer(own_etcd, lease_node, streams)
    own_etcd.kill()
    own_etcd.start()
    for n in range(10, 15):
        put(
            own_etcd,
            f"{prefix}/subnets/10.244.{n}.0-24",
            f'{{"PublicIP":"192.168.50.{n}","BackendType":"vxlan"}}',
        )
    want = [(UPSERT, f"10.244.{n}.0-24") for n in range(10, 15)]
    wait_until(lambda: stream.events() == want, timeout=30, what="every post-restart lease exactly once")
    assert not any(m.kind == Msg.SNAPSHOT and m.reset for m in stream.msgs[1:]), "no second snapshot"
    assert stream.error is None and node.daemon.alive()


def test_etcd_down_or_config_missing_at_start_means_not_serving_with_the_reason(
    tmp_path: Path, lease_node: MakeLeaseNode
) -> None:
    etcd = EtcdServer(tmp_path / "etcd")
    node = lease_node(etcd, "/coreos.com/network", "192.168.50.1", start=False)
    node.start(wait=False)
    try:
        wait_until(lambda: health_status(node.socket) == "NOT_SERVING", what="NOT_SERVING while etcd is down")
        wait_until(
            lambda: "waiting for a usable network config" in node.daemon.log(), what="the reason logged"
        )
        etcd.start()
        wait_until(
            lambda: "no network config in etcd at /coreos.com/network/config" in node.daemon.log(),
            timeout=20,
            what="the missing config named",
        )
        assert health_status(node.socket) == "NOT_SERVING"
        put(etcd, "/coreos.com/network/config", '{"Network": "10.244.0.0/16"}')
        wait_until(lambda: "udp" in node.daemon.log(), timeout=20, what="the udp refusal logged")
        put(etcd, "/coreos.com/network/config", json.dumps(CONFIG))
        node.wait_serving()
    finally:
        etcd.kill()


def test_grpcurl_lists_describes_checks_health_and_streams_leases(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    put(etcd, f"{configured}/subnets/10.244.7.0-24", '{"PublicIP":"192.168.50.7","BackendType":"vxlan"}')
    node = lease_node(etcd, configured, "192.168.50.1")
    listed = grpcurl(node.socket, "list").stdout.split()
    assert {
        "flannel.v1.LeaseService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(listed)
    described = grpcurl(node.socket, "describe", "flannel.v1.LeaseService").stdout
    assert (
        "rpc WatchLeases ( .flannel.v1.WatchLeasesRequest ) returns ( stream .flannel.v1.WatchLeasesResponse )"
        in described
    )
    health = grpcurl(
        node.socket, "grpc.health.v1.Health/Check", data='{"service": "flannel.v1.LeaseService"}'
    )
    assert json.loads(health.stdout) == {"status": "SERVING"}
    streamed = grpcurl(
        node.socket, "flannel.v1.LeaseService/WatchLeases", data="{}", flags=("-max-time", "2"), check=False
    )
    docs = [json.loads(doc) for doc in re.split(r"(?<=})\n(?={)", streamed.stdout.strip())]
    assert docs[0]["kind"] == "SNAPSHOT" and docs[0]["reset"] is True
    assert docs[0]["events"][0]["lease"]["subnet"] == "10.244.7.0/24"
    assert docs[1]["kind"] == "SYNCED" and docs[1]["cursor"]


def test_ten_racing_acquirers_get_ten_distinct_subnets(etcd: EtcdServer, prefix: str) -> None:
    from ipaddress import IPv4Address

    from lease_service.lease import LeaseAttrs
    from lease_service.netconfig import parse_network_config
    from lease_service.subnet.etcd import EtcdSubnetManager

    # 12 subnets for 10 nodes: collisions are likely, and must be resolved by the Txn.
    config_text = json.dumps(
        {**CONFIG, "Network": "10.9.0.0/16", "SubnetMin": "10.9.1.0", "SubnetMax": "10.9.12.0"}
    )
    config = parse_network_config(config_text)

    async def race() -> list[str]:
        clients = [EtcdClient(EtcdSettings(endpoints=(etcd.endpoint,))) for _ in range(10)]
        try:
            managers = [EtcdSubnetManager(c, prefix) for c in clients]
            leases = await asyncio.gather(
                *(
                    m.acquire_lease(
                        config, LeaseAttrs(IPv4Address(f"192.168.60.{i}"), backend_type="vxlan"), (None, None)
                    )
                    for i, m in enumerate(managers, start=1)
                )
            )
            return [str(lease.subnet) for lease in leases]
        finally:
            for c in clients:
                await c.close()

    subnets = asyncio.run(race())
    assert len(set(subnets)) == 10


def test_acquire_reuses_the_lease_naming_our_ip_among_lookalikes_and_escaped_values(
    etcd: EtcdServer, prefix: str
) -> None:
    """acquire_lease decodes only values that may name our IP: a lookalike (192.168.70.10 for .1) is not
    taken for ours, and a value that spells our IP with JSON escapes is still found."""
    from ipaddress import IPv4Address

    from lease_service.lease import LeaseAttrs
    from lease_service.netconfig import parse_network_config
    from lease_service.subnet.etcd import EtcdSubnetManager

    config = parse_network_config(json.dumps(CONFIG))
    for n in range(2, 40):
        put(etcd, f"{prefix}/subnets/10.244.{n}.0-24", json.dumps({"PublicIP": f"192.168.70.{n}"}), ttl=600)
    put(etcd, f"{prefix}/subnets/10.244.1.0-24", json.dumps({"PublicIP": "192.168.70.10"}), ttl=600)
    escaped = '{"PublicIP":"\\u0031\\u0039\\u0032.168.70.1","BackendType":"vxlan"}'
    put(etcd, f"{prefix}/subnets/10.244.77.0-24", escaped, ttl=600)

    async def acquire() -> str:
        async with EtcdClient(EtcdSettings(endpoints=(etcd.endpoint,))) as client:
            lease = await EtcdSubnetManager(client, prefix).acquire_lease(
                config, LeaseAttrs(IPv4Address("192.168.70.1"), backend_type="vxlan"), (None, None)
            )
            return str(lease.subnet)

    assert asyncio.run(acquire()) == "10.244.77.0/24"


def test_acquire_from_the_streams_leases_reuses_ours_and_a_stale_memory_costs_a_listing_not_a_subnet(
    etcd: EtcdServer, prefix: str
) -> None:
    """Chosen from the leases the stream holds (``known``): our lease found there is read again from etcd
    and taken over; a subnet that memory thinks free but etcd holds (memory lags) is refused by the
    create-if-absent transaction and chosen again from a listing of etcd, never shared."""
    from ipaddress import IPv4Address, IPv4Network

    from lease_service.lease import LeaseAttrs, decode_lease
    from lease_service.netconfig import parse_network_config
    from lease_service.stream import LeaseHub
    from lease_service.subnet.base import Known
    from lease_service.subnet.etcd import EtcdSubnetManager

    config = parse_network_config(json.dumps(CONFIG))
    stored = {
        "10.244.5.0-24": json.dumps({"PublicIP": "192.168.71.5"}),
        "10.244.6.0-24": json.dumps({"PublicIP": "192.168.71.1"}),
    }
    for key, value in stored.items():
        put(etcd, f"{prefix}/subnets/{key}", value, ttl=600)

    async def acquire(
        ip: str, previous: str | None, known: tuple[str, ...], after: str | None = None
    ) -> tuple[str, bytes]:
        events = {key: LeaseHub.comparable(decode_lease(key, stored[key].encode())) for key in known}
        async with EtcdClient(EtcdSettings(endpoints=(etcd.endpoint,))) as client:
            lease = await EtcdSubnetManager(client, prefix).acquire_lease(
                config,
                LeaseAttrs(IPv4Address(ip), backend_type="vxlan"),
                (IPv4Network(previous) if previous else None, None),
                Known(events, after),
            )
            other, _ = await client.get(f"{prefix}/subnets/10.244.5.0-24")
            assert other is not None
            return str(lease.subnet), other.value

    # ours (192.168.71.1 at 10.244.6.0) is in memory: reused
    assert asyncio.run(acquire("192.168.71.1", None, tuple(stored)))[0] == "10.244.6.0/24"
    # memory lacks 10.244.5.0, which etcd holds for another node; our old subnet.env names it
    subnet, other = asyncio.run(acquire("192.168.71.9", "10.244.5.0/24", ("10.244.6.0-24",)))
    assert subnet not in ("10.244.5.0/24", "10.244.6.0/24")
    assert json.loads(other)["PublicIP"] == "192.168.71.5"
    # the stream still listing, up to 10.244.5.0: ours, after it, is found by listing the rest from etcd
    # (chosen from memory alone, this node would have taken a second subnet)
    assert asyncio.run(acquire("192.168.71.1", None, ("10.244.5.0-24",), after="10.244.5.0-24"))[0] == (
        "10.244.6.0/24"
    )


def test_a_dual_stack_lease_is_stored_under_flannels_combined_key(
    etcd: EtcdServer, prefix: str, lease_node: MakeLeaseNode
) -> None:
    put(etcd, f"{prefix}/config", json.dumps({**CONFIG, "EnableIPv6": True, "IPv6Network": "fd10::/48"}))
    node = lease_node(etcd, prefix, "192.168.50.1", "--public-ipv6", "fd99::1")
    lease = node.acquire()
    assert re.fullmatch(r"fd10:0:0:[0-9a-f]+::/64", lease.ipv6_subnet), lease.ipv6_subnet
    v6_network = lease.ipv6_subnet.split("/")[0]
    assert lease.key == f"{lease.subnet.replace('/', '-')}&{v6_network}-64"
    assert lease.public_ipv6 == "fd99::1"
    env = (node.run_dir / "subnet.env").read_text()
    assert "FLANNEL_IPV6_NETWORK=fd10::/48\n" in env and f"FLANNEL_IPV6_SUBNET={v6_network}1/64\n" in env


def test_the_lease_is_renewed_before_it_expires(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    # A 6 s lease renewed 4 s before expiry: without renewal it would vanish after 6 s.
    node = lease_node(
        etcd,
        configured,
        "192.168.50.1",
        "--subnet-lease-ttl",
        "6",
        "--subnet-lease-renew-margin-seconds",
        "4",
    )
    lease = node.acquire()
    wait_until(
        lambda: node.daemon.log().count(f"renewed lease {lease.key}") >= 4, timeout=20, what="four renewals"
    )

    async def alive() -> bool:
        async with EtcdClient(EtcdSettings(endpoints=(etcd.endpoint,))) as client:
            kv, _ = await client.get(f"{configured}/subnets/{lease.key}")
            return kv is not None

    assert asyncio.run(alive())


def test_the_socket_is_group_accessible_only(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    import grp
    import stat

    group = grp.getgrgid(0).gr_name
    node = lease_node(etcd, configured, "192.168.50.1", "--socket-group", group)
    mode = node.socket.stat().st_mode
    assert stat.S_IMODE(mode) == 0o660 and node.socket.stat().st_gid == 0


def test_tcp_is_served_only_when_grpc_listen_is_given(
    etcd: EtcdServer, configured: str, lease_node: MakeLeaseNode
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from flannel_testkit.etcd import free_port

    port = free_port()
    node = lease_node(etcd, configured, "192.168.50.1", "--grpc-listen", f"127.0.0.1:{port}")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert (
        f"pid={node.daemon.pid},"
        in subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    )
    node.daemon.kill()
    plain = lease_node(etcd, configured, "192.168.50.2", name="n2")
    assert (
        f"pid={plain.daemon.pid},"
        not in subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    )
