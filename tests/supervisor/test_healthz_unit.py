"""/healthz, /readyz and /livez answers, over a real socket."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.healthz import HealthzServer


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_ready_only_when_every_child_serves() -> None:
    statuses = {"lease-service": "SERVING", "backend": "WAITING"}
    server = HealthzServer("127.0.0.1", 0, lambda: statuses)
    await server.start()
    try:
        port = server.bound_port
        assert await _get(port, "/healthz") == (503, "lease-service: SERVING\nbackend: WAITING\n")
        assert (await _get(port, "/readyz"))[0] == 503
        assert await _get(port, "/livez") == (200, "supervisor loop alive\n")
        statuses["backend"] = "SERVING"
        assert (await _get(port, "/healthz"))[0] == 200
        assert (await _get(port, "/readyz?verbose"))[0] == 200
        assert (await _get(port, "/metrics"))[0] == 404
        assert (await _get(port, "/healthz", "POST"))[0] == 405
        assert await _get(port, "/healthz", "HEAD") == (200, "")
    finally:
        await server.stop()


def test_livez_fails_when_the_loop_stops_beating() -> None:
    server = HealthzServer("127.0.0.1", 0, dict, heartbeat_period=0.01)
    server._last_beat -= 10  # as if the loop had been stuck for 10 s
    assert server.respond("GET", "/livez")[0] == 503
    assert server.respond("GET", "/healthz")[0] == 503  # no children at all is not healthy


async def _raw(port: int, data: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_request_line_over_64_kib_is_refused_by_name_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    server = HealthzServer("127.0.0.1", 0, lambda: {"backend": "SERVING"})
    await server.start()
    try:
        port = server.bound_port
        code, body = await _raw(port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
        assert code == 431 and "longer than 65536 bytes" in body
        code, _ = await _raw(port, b"GET /healthz HTTP/1.1\r\nX: " + b"b" * 70_000 + b"\r\n\r\n")
        assert code == 431
        code, body = await _raw(port, b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")
        assert code == 431 and "too many header lines" in body
        assert await _get(port, "/healthz") == (200, "backend: SERVING\n")
    finally:
        await server.stop()
    assert errors == [] and not [r for r in caplog.records if r.levelname == "ERROR"]
