"""The backend controller with a fake kernel and a fake lease service (real gRPC on a unix socket):
owned tasks, health that means the dataplane is right, full reconciles by the clock, and a failure
that ends the process instead of leaving it half alive."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import grpc
import pytest

from backend_service import cli
from backend_service.controller import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Controller
from backend_service.follow import LeaseView
from backend_service.kernel.model import DELETE, ApplyResult, Expected, KernelSnapshot, Op
from backend_service.node import PublicInterface
from backend_service.planner import Planner
from backend_service.reconciler import FIRST_EARLY_CHUNK
from backend_service.session import Session
from backend_service.status import Health, Status
from flannel_rpc import unix_target
from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

from .factory import config, held, lease
from .factory import node as local_node
from .fakes import DEVICE, FakeKernel, FakeVxlan

Msg = lease_pb2.WatchLeasesResponse
Event = lease_pb2.LeaseEvent
ME = lease(1)


class FakeLeaseService(lease_pb2_grpc.LeaseServiceServicer):
    """Serves a fixed config and lease; WatchLeases sends a snapshot of ``leases``, then what is pushed."""

    def __init__(self, leases: Sequence[lease_pb2.Lease], backend: str = "vxlan") -> None:
        self.leases = list(leases)
        self.backend = backend
        self.deltas: asyncio.Queue[Msg] = asyncio.Queue()
        self.reports: list[lease_pb2.ReportBackendStatusRequest] = []
        self.synced: asyncio.Event | None = None
        """When set to an Event: the snapshot goes a lease per message, and SYNCED waits for the event."""

    async def GetNetworkConfig(self, request: object, context: object) -> lease_pb2.GetNetworkConfigResponse:
        return lease_pb2.GetNetworkConfigResponse(
            config=lease_pb2.NetworkConfig(
                enable_ipv4=True,
                network="10.244.0.0/16",
                subnet_len=24,
                backend_type=self.backend,
                backend=json.dumps({"Type": self.backend}),
            )
        )

    async def AcquireLease(self, request: object, context: object) -> lease_pb2.AcquireLeaseResponse:
        return lease_pb2.AcquireLeaseResponse(lease=ME)

    async def WatchLeases(self, request: object, context: object) -> AsyncIterator[Msg]:
        parts = [self.leases] if self.synced is None else [[x] for x in self.leases]
        for n, part in enumerate(parts):
            yield Msg(
                kind=Msg.SNAPSHOT, reset=n == 0, events=[Event(type=Event.UPSERT, lease=x) for x in part]
            )
        if self.synced is not None:
            await self.synced.wait()
        yield Msg(kind=Msg.SYNCED, cursor="0")
        while True:
            yield await self.deltas.get()

    async def WatchLease(
        self, request: object, context: object
    ) -> AsyncIterator[lease_pb2.WatchLeaseResponse]:
        yield lease_pb2.WatchLeaseResponse(kind=lease_pb2.WatchLeaseResponse.CURRENT, lease=ME)
        await asyncio.Event().wait()

    async def ReportBackendStatus(
        self, request: lease_pb2.ReportBackendStatusRequest, context: object
    ) -> lease_pb2.ReportBackendStatusResponse:
        self.reports.append(request)
        return lease_pb2.ReportBackendStatusResponse()

    def push(self, cursor: int, *upserts: lease_pb2.Lease, removed: Sequence[lease_pb2.Lease] = ()) -> None:
        events = [Event(type=Event.UPSERT, lease=x) for x in upserts]
        events += [Event(type=Event.REMOVE, lease=x) for x in removed]
        self.deltas.put_nowait(Msg(kind=Msg.DELTA, cursor=str(cursor), events=events))


@dataclass
class Node:
    """A controller running against the fakes."""

    service: FakeLeaseService
    kernel: FakeKernel
    status: Status
    health: list[bool] = field(default_factory=list)
    task: asyncio.Task[int] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    server: grpc.aio.Server | None = None
    serve_on: Callable[[FakeLeaseService], Awaitable[grpc.aio.Server]] | None = None
    view: LeaseView | None = None

    @property
    def serving(self) -> bool:
        return bool(self.health) and self.health[-1]

    async def wait(self, predicate: Callable[[], object], what: str, timeout: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert self.task is not None
            if self.task.done():
                raise AssertionError(f"the controller ended ({self.task.result()}) while waiting for {what}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.01)

    async def stopped(self, timeout: float = 10) -> int:
        assert self.task is not None
        return await asyncio.wait_for(self.task, timeout)


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "lease.sock"


@pytest.fixture
async def start(socket_path: Path) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []
    nodes: list[Node] = []

    async def serve_on(service: FakeLeaseService) -> grpc.aio.Server:
        """A lease service on the socket (replacing whatever was there)."""
        server = grpc.aio.server()
        lease_pb2_grpc.add_LeaseServiceServicer_to_server(service, server)
        server.add_insecure_port(unix_target(socket_path))
        await server.start()
        servers.append(server)
        return server

    async def make(
        leases: Sequence[lease_pb2.Lease] = (),
        *,
        kernel: FakeKernel | None = None,
        resync_period: float = 30.0,
        backend: str = "vxlan",
        serve: bool = True,
        synced: asyncio.Event | None = None,
    ) -> Node:
        service = FakeLeaseService(leases, backend)
        service.synced = synced
        server = await serve_on(service) if serve else None
        channel = grpc.aio.insecure_channel(unix_target(socket_path))
        channels.append(channel)
        settings = cli.parse(
            ["--run-dir", str(socket_path.parent), "--resync-period", str(resync_period)], {}
        )
        status = Status()
        node = Node(service, kernel or FakeKernel(), status, server=server, serve_on=serve_on)

        async def set_serving(serving: bool) -> None:
            node.health.append(serving)

        async def dataplane(config: object, external: object) -> tuple[PublicInterface, FakeVxlan]:
            return PublicInterface("eth0", 2, 1500, IPv4Address("192.168.77.1")), FakeVxlan()

        view = node.view = LeaseView()
        session = Session(settings, lease_pb2_grpc.LeaseServiceStub(channel), status, view, dataplane)
        controller = Controller(
            session, node.kernel, view, status, Health(status, set_serving), resync_period=resync_period
        )
        node.task = asyncio.create_task(controller.run(node.stop))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop.set()
        if node.task is not None:
            await asyncio.wait_for(asyncio.gather(node.task, return_exceptions=True), 10)
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(0)


def objects_for(kernel: FakeKernel, n: int) -> set[str]:
    """The kernel objects that reach node ``n`` (its route, neighbour and FDB entry)."""
    return {
        str(o) for o in kernel.objects.values() if f"10.244.{n}.0" in str(o) or f"192.168.77.{n} " in f"{o} "
    }


async def test_serving_once_synced_and_applied_then_deltas_without_reading_the_kernel(
    start: Callable,
) -> None:
    node: Node = await start([ME, lease(2)])
    await node.wait(lambda: node.serving, "SERVING")
    assert len(objects_for(node.kernel, 2)) == 3
    assert node.status.synced and node.status.device_present and node.status.peers == {lease(2).key: "vxlan"}
    reads = node.kernel.reads
    node.service.push(1, lease(3))
    await node.wait(lambda: len(objects_for(node.kernel, 3)) == 3, "lease 3 programmed")
    node.service.push(2, removed=[lease(2)])
    await node.wait(lambda: not objects_for(node.kernel, 2), "lease 2 removed")
    assert node.kernel.reads == reads  # both went as deltas
    await node.wait(
        lambda: node.service.reports and node.service.reports[-1].applied_cursor == "2", "reported"
    )
    node.stop.set()
    assert await node.stopped() == EXIT_OK


async def hold_stale_peer(kernel: FakeKernel, n: int) -> None:
    """Put in ``kernel`` what the backend had programmed for peer ``n`` before a restart."""
    stale = FakeKernel()
    await stale.apply(
        Planner(config("vxlan"), FakeVxlan())
        .plan_full(held(lease(n)), local_node(1), await stale.read(()), synced=True)
        .ops
    )
    kernel.objects.update(stale.objects)


async def test_the_first_snapshot_is_programmed_as_it_streams_and_nothing_is_deleted_before_synced(
    start: Callable,
) -> None:
    kernel = FakeKernel()
    await hold_stale_peer(kernel, 9)
    synced = asyncio.Event()
    node: Node = await start([ME, lease(2), lease(3)], kernel=kernel, synced=synced)
    await node.wait(
        lambda: len(objects_for(kernel, 2)) == len(objects_for(kernel, 3)) == 3, "peers added early"
    )
    assert len(objects_for(kernel, 9)) == 3 and not node.serving and not node.status.synced
    synced.set()
    await node.wait(lambda: node.serving, "SERVING")
    assert not objects_for(kernel, 9) and node.status.peers == {lease(2).key: "vxlan", lease(3).key: "vxlan"}


class SlowFirstRead(FakeKernel):
    """The first full reconcile's read ends only once the test lets it (the whole snapshot came meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def read(self, devices: Iterable[str], expect: Expected | None = None) -> KernelSnapshot:
        if not self.reading.is_set():
            self.reading.set()
            await self.release.wait()
        return await super().read(devices, expect)


async def test_a_snapshot_whole_before_the_first_read_ends_is_written_in_parts_before_the_full_plan(
    start: Callable,
) -> None:
    kernel = SlowFirstRead()
    await hold_stale_peer(kernel, 9)
    peers = [lease(n) for n in range(10, 160)]
    node: Node = await start([ME, *peers], kernel=kernel)
    await node.wait(lambda: kernel.reading.is_set(), "the first full reconcile reading the kernel")
    await node.wait(lambda: node.view is not None and node.view.synced, "the whole snapshot and SYNCED")
    kernel.release.set()
    await node.wait(lambda: node.serving, "SERVING")
    batches = [ops for ops in kernel.applied if ops]
    # the first write: the first 100 leases alone (the node's own and 99 peers: a route, a neighbour and an
    # FDB entry each), nothing deleted; the stale peer only by the full plan at SYNCED, after every peer
    assert len(batches[0]) == 3 * (FIRST_EARLY_CHUNK - 1) and all(op.action != DELETE for op in batches[0])
    deletes = [n for n, ops in enumerate(batches) if any(op.action == DELETE for op in ops)]
    assert deletes == [len(batches) - 1]
    assert not objects_for(kernel, 9) and all(len(objects_for(kernel, n)) == 3 for n in range(10, 160))


class GatedKernel(FakeKernel):
    """Applies a non-empty batch of ops only once the test lets one through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Semaphore(0)
        self.waiting = 0

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        if ops:
            self.waiting += 1
            await self.gate.acquire()
            self.waiting -= 1
        return await super().apply(ops)


async def test_not_serving_while_early_parts_are_still_being_applied(start: Callable) -> None:
    kernel = GatedKernel()
    node: Node = await start([ME, lease(2), lease(3), lease(4)], kernel=kernel, synced=asyncio.Event())
    assert node.service.synced is not None
    await node.wait(
        lambda: kernel.waiting >= 1, "the first part waiting for the kernel (the next may wait behind it)"
    )
    node.service.synced.set()
    await node.wait(lambda: node.view is not None and node.view.synced, "SYNCED received")
    kernel.gate.release()
    await node.wait(lambda: len(kernel.applied) == 1, "the first part applied")
    assert not node.serving and not node.status.synced
    for _ in range(10):
        kernel.gate.release()
    await node.wait(lambda: node.serving, "SERVING")
    assert {n for n in (2, 3, 4) if len(objects_for(kernel, n)) == 3} == {2, 3, 4}


class RaisingKernel(FakeKernel):
    """Raises (a bug, not a kernel refusal) on the first apply after ``armed``."""

    armed = False

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        if self.armed:
            raise RuntimeError("a bug in the reconciler")
        return await super().apply(ops)


async def test_a_reconciler_that_raises_turns_health_not_serving_and_ends_with_a_non_zero_code(
    start: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = RaisingKernel()
    node: Node = await start([ME, lease(2)], kernel=kernel)
    await node.wait(lambda: node.serving, "SERVING")
    kernel.armed = True
    with caplog.at_level(logging.ERROR, logger="backend_service"):
        node.service.push(1, lease(3))
        assert await node.stopped() == EXIT_FAILURE
    assert node.health[-2:] == [True, False]
    assert "a bug in the reconciler" in node.status.failed
    failures = [r for r in caplog.records if "a bug in the reconciler" in r.getMessage() or r.exc_info]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]


async def test_full_reconciles_run_by_the_clock_while_deltas_keep_coming(start: Callable) -> None:
    node: Node = await start([ME, lease(2)], resync_period=0.5)
    await node.wait(lambda: node.serving, "SERVING")
    route = next(o for o in node.kernel.objects.values() if type(o).__name__ == "Route")
    fdb = next(o for o in node.kernel.objects.values() if type(o).__name__ == "FdbEntry")
    node.kernel.remove(route)
    node.kernel.remove(fdb)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    cursor = 0
    # churn faster than the period: a delta every 50 ms, never letting the reconciler go idle
    while len(objects_for(node.kernel, 2)) < 3:
        assert loop.time() < deadline, "the deleted route and FDB entry were never restored"
        cursor += 1
        n = 100 + cursor % 2
        node.service.push(cursor, lease(n)) if cursor % 4 < 2 else node.service.push(
            cursor, removed=[lease(n)]
        )
        await asyncio.sleep(0.05)
    assert node.serving


async def test_a_lost_lease_service_is_reconnected_and_the_new_stream_followed(start: Callable) -> None:
    node: Node = await start([ME, lease(2)])
    await node.wait(lambda: node.serving, "SERVING")
    assert node.serve_on is not None and node.server is not None
    await node.server.stop(0)
    node.service = FakeLeaseService([ME, lease(3)])  # the store changed while the service was away
    node.server = await node.serve_on(node.service)
    await node.wait(
        lambda: objects_for(node.kernel, 3) and not objects_for(node.kernel, 2), "the new snapshot applied"
    )
    assert node.task is not None and not node.task.done() and node.serving


async def test_a_missing_device_is_not_serving_until_it_is_back(start: Callable) -> None:
    node: Node = await start([ME, lease(2)], resync_period=0.2)
    await node.wait(lambda: node.serving, "SERVING")
    del node.kernel.links[3]
    await node.wait(lambda: not node.serving, "NOT_SERVING without the device")
    assert not node.status.device_present
    node.kernel.links[3] = DEVICE
    await node.wait(lambda: node.serving, "SERVING with the device back")


async def test_an_unusable_network_config_ends_with_the_usage_code(start: Callable) -> None:
    node: Node = await start([ME], backend="udp")
    assert await node.stopped() == EXIT_USAGE
    assert node.health == [False] and "Backend.Type" in node.status.failed


async def test_a_stop_while_the_lease_service_is_away_ends_at_once(start: Callable) -> None:
    node: Node = await start([ME], serve=False)
    await node.wait(lambda: node.health == [] and node.task is not None and not node.task.done(), "running")
    node.stop.set()
    assert await node.stopped(timeout=2) == EXIT_OK
    assert not node.serving


async def test_a_resync_with_nothing_drifted_checks_the_kernel_instead_of_reading_it(start: Callable) -> None:
    node: Node = await start([ME, lease(2)], resync_period=0.2)
    await node.wait(lambda: node.serving, "SERVING")
    reads, checks = node.kernel.reads, node.kernel.checks
    await node.wait(lambda: node.kernel.checks >= checks + 2, "two resyncs")
    assert node.kernel.reads == reads
    node.kernel.remove(next(o for o in node.kernel.objects.values() if type(o).__name__ == "Neighbour"))
    await node.wait(
        lambda: len(objects_for(node.kernel, 2)) == 3, "the neighbour restored by the next resync"
    )
    assert node.kernel.reads > reads and node.serving
