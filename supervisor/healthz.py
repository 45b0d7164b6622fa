"""flannel's health endpoint, on asyncio streams.

* ``GET /healthz`` and ``GET /readyz``: 200 when both children answer SERVING to grpc.health.v1, else 503.
  (flannel's own /healthz answers 200 once flanneld runs; here "running" means both halves serve.)
* ``GET /livez``: 200 while the supervisor's event loop is alive (a heartbeat newer than a few seconds).

The body is plain text, one ``name: status`` line per child, so ``curl`` shows why it is not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

REQUEST_DEADLINE = 5.0
"""Seconds a client has to send its whole request."""
MAX_HEADERS = 100
LINE_LIMIT = 2**16
"""Bytes of the longest request or header line accepted."""

Statuses = Callable[[], Mapping[str, str]]
"""Returns each child's current health as text; ``"SERVING"`` counts as healthy."""

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class HealthzServer:
    """A tiny HTTP/1.1 server (one request per connection) for /healthz, /readyz and /livez."""

    def __init__(self, host: str, port: int, statuses: Statuses, *, heartbeat_period: float = 1.0) -> None:
        self.host = host
        self.port = port
        self._statuses = statuses
        self._server: asyncio.Server | None = None
        self._heartbeat_period = heartbeat_period
        self._last_beat = time.monotonic()
        self._beat_task: asyncio.Task[None] | None = None

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=LINE_LIMIT)
        self._beat_task = asyncio.create_task(self._beat(), name="healthz-heartbeat")
        log.info("healthz listening on %s:%d (/healthz, /readyz, /livez)", self.host, self.bound_port)

    async def stop(self) -> None:
        if self._beat_task is not None:
            self._beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat_task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _beat(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(self._heartbeat_period)

    def respond(self, method: str, path: str) -> tuple[int, str]:
        """Status code and body for one request (pure, for tests)."""
        path = path.split("?", 1)[0]
        if path not in ("/healthz", "/readyz", "/livez"):
            return 404, "not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "method not allowed\n"
        if path == "/livez":
            age = time.monotonic() - self._last_beat
            alive = age < 3 * self._heartbeat_period + 1
            return (200 if alive else 503), f"supervisor loop {'alive' if alive else 'stalled'}\n"
        statuses = dict(self._statuses())
        ready = bool(statuses) and all(s == "SERVING" for s in statuses.values())
        body = "".join(f"{name}: {status}\n" for name, status in statuses.items())
        return (200 if ready else 503), body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                code, body, head_only = await self._read_request(reader)
                payload = body.encode()
                head = (
                    f"HTTP/1.1 {code} {_REASONS.get(code, '')}\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    f"Content-Length: {len(payload)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode() + (b"" if head_only else payload))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[int, str, bool]:
        """Status, body and whether only the head is wanted; a request too long is a 431, not an error."""
        try:
            request = await reader.readuntil(b"\n")
            for _ in range(MAX_HEADERS + 1):  # drain headers
                header = await reader.readuntil(b"\n")
                if header in (b"\r\n", b"\n"):
                    break
            else:
                return 431, "too many header lines\n", False
        except asyncio.LimitOverrunError:
            return 431, f"request line or header longer than {LINE_LIMIT} bytes\n", False
        except asyncio.IncompleteReadError:
            return 400, "bad request\n", False
        parts = request.decode("latin-1").split()
        if len(parts) < 2:
            return 400, "bad request\n", False
        code, body = self.respond(parts[0], parts[1])
        return code, body, parts[0] == "HEAD"
