"""flanneld's gRPC-free health probe against a real grpc.aio server (grpc.health.v1 servicer) and against
servers that answer badly or not at all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import hpack
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from supervisor import probe


@pytest.fixture
async def health_server(tmp_path: Path) -> AsyncIterator[tuple[Path, health.aio.HealthServicer]]:
    sock = tmp_path / "h.sock"
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    try:
        yield sock, servicer
    finally:
        await server.stop(0)


async def test_the_probe_reads_each_status_a_grpc_server_answers(
    health_server: tuple[Path, health.aio.HealthServicer],
) -> None:
    sock, servicer = health_server
    Status = health_pb2.HealthCheckResponse
    for status, name in [
        (Status.SERVING, "SERVING"),
        (Status.NOT_SERVING, "NOT_SERVING"),
        (Status.UNKNOWN, "UNKNOWN"),
    ]:
        await servicer.set("", status)
        assert await probe.check(sock, 5) == name
    await servicer.set("flannel.v1.LeaseService", Status.SERVING)
    assert await probe.check(sock, 5, "flannel.v1.LeaseService") == "SERVING"
    assert await probe.check(sock, 5, "no.such.Service") == "SERVICE_UNKNOWN"  # grpc-status NOT_FOUND
    for _ in range(20):  # a connection per probe: nothing accumulates, every answer is read
        assert await probe.check(sock, 5, "flannel.v1.LeaseService") == "SERVING"


async def test_no_socket_and_a_closed_server_are_no_answer(
    tmp_path: Path, health_server: tuple[Path, health.aio.HealthServicer]
) -> None:
    assert await probe.check(tmp_path / "missing.sock", 1) is None
    plain = tmp_path / "plain"
    plain.write_text("")
    assert await probe.check(plain, 1) is None  # not a socket


async def _serve_raw(path: Path, reply: bytes | None) -> asyncio.Server:
    """A unix server that reads the request and answers ``reply`` then hangs up (None: never answers)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        if reply is None:
            await reader.read()  # until the client gives up and hangs up
        else:
            writer.write(reply)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, str(path))


async def test_a_server_that_never_answers_is_no_answer_within_the_timeout(tmp_path: Path) -> None:
    server = await _serve_raw(tmp_path / "mute.sock", None)
    async with server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await probe.check(tmp_path / "mute.sock", 0.3) is None
        assert loop.time() - started < 5


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "UNKNOWN"),  # not HTTP/2: a frame header of nonsense
        (probe.frame(probe.DATA, 0, 1, b"x") * 10_000, "UNKNOWN"),  # endless frames: bounded
        (b"\xff\xff\xff" + b"\x00" * 6, "UNKNOWN"),  # a frame larger than allowed
        (probe.frame(probe.HEADERS, probe.END_HEADERS | probe.END_STREAM, 1, b"\xff\xff\xff"), "UNKNOWN"),
        (probe.frame(probe.RST_STREAM, 0, 1, b"\x00\x00\x00\x07"), None),  # REFUSED_STREAM
        (probe.frame(probe.GOAWAY, 0, 0, b"\x00" * 8), None),
        (b"", None),  # hung up
    ],
)
async def test_a_bad_answer_is_named_unknown_and_a_refusal_is_no_answer(
    tmp_path: Path, reply: bytes, expected: str | None
) -> None:
    server = await _serve_raw(tmp_path / "bad.sock", reply)
    async with server:
        assert await probe.check(tmp_path / "bad.sock", 2) == expected


def test_flanneld_loads_neither_grpc_nor_protobuf() -> None:
    code = "import sys, supervisor.__main__; print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_a_kept_connection_follows_the_status_and_outlives_the_connection_window(
    health_server: tuple[Path, health.aio.HealthServicer],
) -> None:
    sock, servicer = health_server
    Status = health_pb2.HealthCheckResponse
    connection = probe.Connection(sock)
    try:
        await servicer.set("", Status.NOT_SERVING)
        assert await connection.check(5) == "NOT_SERVING"
        await servicer.set("", Status.SERVING)
        # 7 bytes of DATA per answer: 10,000 answers are past the 65,535-byte connection window unless the
        # probe hands it back
        for _ in range(10_000):
            assert await connection.check(5) == "SERVING"
    finally:
        await connection.close()


async def test_a_kept_connection_to_a_restarted_child_asks_the_new_one(tmp_path: Path) -> None:
    sock = tmp_path / "h.sock"
    connection = probe.Connection(sock)
    try:
        for status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING):
            server = grpc.aio.server()
            servicer = health.aio.HealthServicer()
            await servicer.set("", status)
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
            server.add_insecure_port(f"unix:{sock}")
            await server.start()
            try:
                assert await connection.check(5) == health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            finally:
                await server.stop(0)
        assert await connection.check(1) is None  # and none there at all
    finally:
        await connection.close()


def _answer(stream: int) -> bytes:
    """A SERVING answer on ``stream``: headers, the message, trailers (each header block on its own)."""
    head = hpack.Encoder().encode([(":status", "200"), ("content-type", "application/grpc")])
    tail = hpack.Encoder().encode([("grpc-status", "0")])
    return (
        probe.frame(probe.HEADERS, probe.END_HEADERS, stream, head)
        + probe.frame(probe.DATA, 0, stream, b"\x00\x00\x00\x00\x02\x08\x01")
        + probe.frame(probe.HEADERS, probe.END_HEADERS | probe.END_STREAM, stream, tail)
    )


async def test_a_child_that_hangs_after_answering_is_no_answer_on_the_kept_connection(tmp_path: Path) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(_answer(1))  # the first probe is answered, then the child hangs with the socket open
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_unix_server(handle, str(tmp_path / "hang.sock"))
    connection = probe.Connection(tmp_path / "hang.sock")
    async with server:
        try:
            assert await connection.check(2) == "SERVING"
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await connection.check(0.3) is None
            assert loop.time() - started < 5
        finally:
            await connection.close()
