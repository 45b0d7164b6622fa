"""Calls that end badly end quietly: a peer that leaves in the middle of a stream, and a call still in
flight when the server stops (each once cost a gRPC traceback in a daemon's log)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc._cython.cygrpc import ExecuteBatchError  # what gRPC raises there

from flannel_rpc import UnixServer, unix_target
from flannel_rpc.serve import GuardInterceptor

SERVICE = "t.Endings"


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(60)
    return b"late"


async def _endless(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    while True:
        yield b"x" * 60_000


async def _unserializable(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
    yield b"fine"
    yield 42  # a bug: not bytes


def _as_bytes(message: object) -> bytes:
    return bytes(memoryview(message))  # type: ignore[arg-type]  # TypeError for what is not bytes-like


def _add(server: grpc.aio.Server) -> None:
    handlers = {
        "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        "Endless": grpc.unary_stream_rpc_method_handler(_endless),
        "Unserializable": grpc.unary_stream_rpc_method_handler(
            _unserializable, response_serializer=_as_bytes
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


# A call still in flight at stop: gRPC's stop returns before the handler has ended, and what is left of
# the call when asyncio.run cancels the remaining tasks was logged by gRPC as "Exception not handled".
_STOP_WITH_A_CALL_IN_FLIGHT = textwrap.dedent(
    """
    import asyncio, logging, sys
    from pathlib import Path
    import grpc
    from flannel_rpc import UnixServer, unix_target
    from tests.hostile.test_call_endings import _add

    async def main(socket):
        server = UnixServer(Path(socket), ["t.Endings"], _add)
        await server.start()
        channel = grpc.aio.insecure_channel(unix_target(socket))
        call = channel.unary_unary("/t.Endings/Slow")(b"", timeout=60)
        while not server._guard.calls:
            await asyncio.sleep(0.01)
        await server.stop(grace=0.1)
        print("stopped")  # and the loop ends, as a daemon's does right after its server stopped

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_call_in_flight_when_the_server_stops_ends_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _STOP_WITH_A_CALL_IN_FLIGHT, str(tmp_path / "s.sock")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr and "not handled" not in done.stderr, done.stderr[-3000:]


async def test_peers_that_leave_in_the_middle_of_a_stream_cost_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = UnixServer(tmp_path / "s.sock", [SERVICE], _add)
    await server.start()
    try:
        with caplog.at_level(logging.DEBUG):
            async with grpc.aio.insecure_channel(unix_target(tmp_path / "s.sock")) as channel:
                endless = channel.unary_stream(f"/{SERVICE}/Endless")
                for _ in range(100):
                    call = endless(b"", timeout=30)
                    assert len(await anext(aiter(call))) == 60_000
                    call.cancel()

                async def streams_ended() -> None:
                    while server._guard.calls:
                        await asyncio.sleep(0.01)

                await asyncio.wait_for(streams_ended(), timeout=30)
    finally:
        await server.stop()
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text[-2000:]


class _GoneContext:
    """A servicer context whose peer has just gone: the write fails inside gRPC's core before gRPC has
    seen the peer's cancellation (the race the guard answers)."""

    def __init__(self) -> None:
        self.writes = 0

    async def write(self, item: Any) -> None:
        self.writes += 1
        raise ExecuteBatchError('Failed "execute_batch"')

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"the guard answered {code} to a peer that is gone")


async def test_a_failed_write_waits_for_the_cancellation_and_closes_the_stream() -> None:
    closed = asyncio.Event()

    async def stream(request: bytes, context: object) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"lease"
        finally:
            closed.set()

    guard = GuardInterceptor()
    details = type("Details", (), {"method": f"/{SERVICE}/Stream", "invocation_metadata": ()})()

    async def continuation(_: object) -> grpc.RpcMethodHandler:
        return grpc.unary_stream_rpc_method_handler(stream)

    handler = await guard.intercept_service(continuation, details)
    assert handler is not None
    context = _GoneContext()
    task = asyncio.create_task(handler.unary_stream(b"", context))
    await asyncio.wait_for(closed.wait(), timeout=10)  # the stream is closed at once ...
    assert context.writes == 1 and not task.done()  # ... and the handler waits for gRPC's cancellation
    assert guard.calls == {task}
    task.cancel()  # what gRPC does once it sees the peer's cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not guard.calls


async def test_a_message_that_does_not_serialize_is_answered_internal_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a bug of ours in a stream is not a peer that went away: the caller hears INTERNAL and the log says
    # what failed, instead of the stream ending quietly after the guard's wait for a cancellation
    server = UnixServer(tmp_path / "s.sock", [SERVICE], _add)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(unix_target(tmp_path / "s.sock")) as channel:
            call = channel.unary_stream(f"/{SERVICE}/Unserializable")(b"", timeout=30)
            received = []
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for message in call:
                    received.append(message)
    finally:
        await server.stop()
    assert received == [b"fine"]
    assert raised.value.code() == grpc.StatusCode.INTERNAL, raised.value
    assert "Unserializable failed" in caplog.text and "answered INTERNAL" in caplog.text, caplog.text
