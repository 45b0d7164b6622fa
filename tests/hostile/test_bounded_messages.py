"""Messages stay bounded: stream batches cut by bytes, one oversized lease refused by name, and the
server guard (INTERNAL with one line; undecodable bytes INVALID_ARGUMENT) on a real gRPC server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import grpc
import pytest

from flannel_rpc import MAX_MESSAGE_BYTES, MESSAGE_LIMITS, STREAM_BATCH_BYTES, UnixServer, unix_target
from lease_service.lease import Lease, LeaseAttrs
from lease_service.stream import HubSettings, LeaseHub
from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

Msg = lease_pb2.WatchLeasesResponse


def lease(n: int, data_bytes: int = 0, revision: int = 0) -> Lease:
    data = f'"{"x" * data_bytes}"' if data_bytes else ""
    return Lease(
        key=f"10.244.{n}.0-24",
        subnet=IPv4Network(f"10.244.{n}.0/24"),
        ipv6_subnet=None,
        attrs=LeaseAttrs(IPv4Address(f"192.168.0.{n}"), backend_type="vxlan", backend_data=data),
        mod_revision=revision,
    )


async def take_until_synced(stream: AsyncIterator[bytes]) -> list[Msg]:
    msgs: list[Msg] = []
    while not msgs or msgs[-1].kind != Msg.SYNCED:
        msgs.append(Msg.FromString(await asyncio.wait_for(anext(stream), 5)))
    return msgs


def test_the_batch_cap_stays_well_under_the_receive_limit() -> None:
    assert STREAM_BATCH_BYTES * 2 <= MAX_MESSAGE_BYTES
    assert ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES) in MESSAGE_LIMITS


async def test_a_snapshot_of_big_leases_is_cut_by_bytes_not_only_by_count() -> None:
    hub = LeaseHub("t", HubSettings(batch_bytes=10_000))
    hub.reset({lease(n).key: lease(n, 3_000) for n in range(1, 8)}, revision=5)
    msgs = await take_until_synced(hub.watch(max_batch=500))
    snapshot = [m for m in msgs if m.kind == Msg.SNAPSHOT]
    assert sum(len(m.events) for m in snapshot) == 7
    assert len(snapshot) >= 3 and all(m.ByteSize() <= 10_000 for m in snapshot)


async def test_a_delta_larger_than_the_cap_is_split_and_only_its_last_part_carries_the_cursor() -> None:
    hub = LeaseHub("t", HubSettings(batch_bytes=10_000))
    hub.reset({}, revision=1)
    stream = hub.watch()
    await take_until_synced(stream)
    hub.apply([(lease(n).key, lease(n, 3_000)) for n in range(1, 8)], revision=2)
    parts = [Msg.FromString(await asyncio.wait_for(anext(stream), 5)) for _ in range(3)]
    assert all(m.kind == Msg.DELTA and m.ByteSize() <= 10_000 for m in parts)
    assert [len(m.events) for m in parts] == [3, 3, 1]
    assert [bool(m.cursor) for m in parts] == [False, False, True]


async def test_one_lease_larger_than_a_message_is_refused_by_name_and_the_rest_flow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = LeaseHub("t", HubSettings(batch_bytes=10_000))
    with caplog.at_level(logging.WARNING):
        hub.reset({lease(1).key: lease(1), lease(2).key: lease(2, 20_000, revision=3)}, revision=5)
        hub.apply([(lease(2).key, lease(2, 20_000, revision=3))], revision=6)  # the same change again
    msgs = await take_until_synced(hub.watch())
    assert [e.lease.key for m in msgs for e in m.events] == ["10.244.1.0-24"]
    lines = [r.getMessage() for r in caplog.records if "LEASE_TOO_LARGE" in r.getMessage()]
    assert len(lines) == 1 and "10.244.2.0-24" in lines[0] and len(lines[0]) < 300


class Exploding(lease_pb2_grpc.LeaseServiceServicer):
    async def Describe(self, request: lease_pb2.DescribeRequest, context: grpc.aio.ServicerContext) -> None:
        raise KeyError("a bug")

    async def WatchLeases(
        self, request: lease_pb2.WatchLeasesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Msg]:
        yield Msg(kind=Msg.PROGRESS, cursor="c")
        raise ValueError("a bug in a stream")


async def test_the_guard_answers_internal_and_invalid_argument_with_one_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = lease_pb2.DESCRIPTOR.services_by_name["LeaseService"].full_name
    server = UnixServer(
        tmp_path / "s.sock",
        [service],
        lambda s: lease_pb2_grpc.add_LeaseServiceServicer_to_server(Exploding(), s),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            unix_target(tmp_path / "s.sock"), options=MESSAGE_LIMITS
        ) as channel:
            stub = lease_pb2_grpc.LeaseServiceStub(channel)
            with caplog.at_level(logging.INFO):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Describe(lease_pb2.DescribeRequest(), timeout=5)
                assert info.value.code() == grpc.StatusCode.INTERNAL
                stream = stub.WatchLeases(lease_pb2.WatchLeasesRequest(), timeout=5)
                assert (await anext(aiter(stream))).cursor == "c"
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await anext(aiter(stream))
                assert info.value.code() == grpc.StatusCode.INTERNAL
                raw = channel.unary_unary(f"/{service}/AcquireLease")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await raw(b"\xff\xff\xff\xff", timeout=5)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)
    assert "KeyError" in text and "answered INTERNAL" in text and "undecodable request" in text
