"""The heartbeat writer of ``bench/kube_scale.py``, in a process of its own.

Run by ``kube_scale.py`` (``python -m bench.kube_writer ...``): it prepares every Node's JSON once with a
placeholder for the heartbeat time, prints ``ready``, waits for a line on stdin, then writes ``--rate``
heartbeats a second round-robin over the N Nodes for ``--seconds`` (at most ``--in-flight`` puts at once)
and one new Node every ``--new-every`` seconds (outside that bound, so a new Node never queues behind
heartbeats), and prints one JSON line: the heartbeats written, how far the writer fell behind its
schedule, and each new Node's subnet, name, write time and acknowledgement time (``time.monotonic()``,
the same clock in every process of the machine).

Why a process of its own: encoding ~10 KB Nodes and putting them into etcd at 500 a second takes most of a
core in Python. In the bench's process that starved the kernel monitor's thread of the GIL (its timestamps,
i.e. the latency measured, were the writer's lag), and a writer falling behind delayed the new Nodes'
writes too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import peer_subnet
from bench.kube_scale import encode, kube_node, node_key
from flannel_testkit.etcd import etcd_client

PLACEHOLDER = b"2000-01-01T00:00:00.000000Z"  # as long as the heartbeat times written in its place


async def write(
    etcd_url: str, n: int, rate: float, seconds: float, first_new: int, new_every: float, in_flight: int
) -> dict[str, object]:
    templates = [encode(kube_node(i, heartbeat=PLACEHOLDER.decode())) for i in range(n)]
    async with etcd_client(etcd_url) as client:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        slots = asyncio.Semaphore(in_flight)
        tasks: set[asyncio.Task[None]] = set()
        new_nodes: list[tuple[str, str, float, float]] = []

        async def heartbeat(i: int, body: bytes) -> None:
            try:
                await client.put(node_key(f"node-{i:05d}"), body)
            finally:
                slots.release()

        async def new_node(k: int) -> None:
            name, body = f"node-{k:05d}", encode(kube_node(k))
            issued = time.monotonic()
            await client.put(node_key(name), body)
            new_nodes.append((peer_subnet(k).split("/")[0], name, issued, time.monotonic()))

        def spawn(coro: Coroutine[object, object, None]) -> None:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        writes, behind, k = 0, 0.0, first_new
        t0 = time.monotonic()
        next_new = t0
        while (now := time.monotonic()) < t0 + seconds:
            if new_every > 0 and now >= next_new:
                next_new += new_every
                spawn(new_node(k))
                k += 1
            behind = max(behind, now - (t0 + writes / rate))
            await slots.acquire()
            i = writes % n
            beat = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            spawn(heartbeat(i, templates[i].replace(PLACEHOLDER, beat)))
            writes += 1
            await asyncio.sleep(max(0.0, t0 + writes / rate - time.monotonic()))
        elapsed = time.monotonic() - t0
        await asyncio.gather(*tasks)
        return {
            "writes": writes,
            "seconds": round(elapsed, 3),
            "behind_seconds": round(behind, 3),
            "new_nodes": new_nodes,
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--etcd", required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--first-new", type=int, required=True)
    p.add_argument("--new-every", type=float, default=0.2, help="seconds between new Nodes (0: none)")
    p.add_argument("--in-flight", type=int, default=64)
    a = p.parse_args()
    result = asyncio.run(write(a.etcd, a.nodes, a.rate, a.seconds, a.first_new, a.new_every, a.in_flight))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
