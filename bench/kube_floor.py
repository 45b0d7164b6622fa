"""The wakeup floor of ``bench/kube_scale.py``: what receiving a Node watch costs a process that does nothing else.

Run by ``kube_scale.py`` (``python -m bench.kube_floor URL``): it reads the API server's current
resourceVersion, opens a Node watch from there with a bare ``asyncio.Protocol`` that only counts the
events (no HTTP library, no decoding, no gRPC), prints ``ready``, and when a line arrives on stdin prints
one JSON line: the events received and its own CPU seconds. Run alongside the heartbeats, it tells how much
of the lease service's CPU per update is the price of waking a Python process per ~10 KB event on this
machine rather than the lease service's own work.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from urllib.parse import urlsplit


class _Counter(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self.request, self.done, self.events = request, done, 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.events += data.count(b'{"type":')

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def watch(url: str, version: str) -> dict[str, float]:
    parts = urlsplit(url)
    request = (
        f"GET /api/v1/nodes?watch=1&resourceVersion={version} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, counter = await loop.create_connection(
        lambda: _Counter(request, done), parts.hostname or "127.0.0.1", parts.port or 80
    )
    print("ready", flush=True)
    before = os.times()
    await asyncio.to_thread(sys.stdin.readline)
    after = os.times()
    transport.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"events": counter.events, "cpu_seconds": round(cpu, 3)}


def main() -> int:
    url = sys.argv[1]
    with urllib.request.urlopen(f"{url}/api/v1/nodes?limit=1", timeout=30) as answer:
        version = json.load(answer)["metadata"]["resourceVersion"]
    print(json.dumps(asyncio.run(watch(url, version))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
