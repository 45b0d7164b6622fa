"""Churn: with N peers in sync, leases are added and removed in etcd at a steady rate; latency from
the etcd write to the kernel change, p50/p99/max, and whether the backend keeps up.

    sudo .venv/bin/python bench/churn.py --peers 1000 --rate 100 1000 --seconds 10 --json churn.json

Each tick alternates: add a new peer lease, remove the oldest peer lease present (first the
initial ones, then the churn's own; the population stays near N and every removed lease is old
enough to be in the kernel). New leases take the subnets after the initial ones, round the network
(10.1.0.0/24 to 10.255.255.0/24) for long runs, never one present or the node's own (a lease written
over the node's own is a takeover, which the lease service undoes: another measure). The latency of an add is the time from issuing the etcd put to the
kernel's RTM_NEWROUTE for the peer's subnet (the route is the last of the peer's three objects to
be programmed); of a removal, to the RTM_DELROUTE (the first to go). "Keeps up": every change
arrived, and the last one within 1 s of the last write.

The changes due within each ``--batch-ms`` (10 ms) go to etcd as one transaction, timed from when it is
sent: one request per change (``--batch-ms 0``) made etcd refuse writes at 300-1,000 changes/s on two
shared cores ("etcdserver: too many requests": its apply fell 5,000 entries behind its log), which
measured etcd rather than the node.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    PEER_ROOM,
    Node,
    bench_node,
    cpu_delta,
    cpu_now,
    git_commit,
    own_subnet,
    peer_index,
    peer_key,
    peer_subnet,
    peer_value,
    percentile,
    start_and_sync,
    table,
    wait_for,
    write_config,
    write_json,
    write_peers,
)
from flannel_testkit.netlink import KernelMonitor
from flannel_testkit.processes import health_status


class Population:
    """The peers present (oldest first) and the index of the next new one."""

    def __init__(self, peers: int, own: int) -> None:
        self.present: deque[int] = deque(range(peers))
        self._held = set(self.present)
        self._own = own
        self._next = peers

    def add(self) -> int:
        if len(self._held) + 1 >= PEER_ROOM:
            raise RuntimeError(f"no room for another peer in the bench's network ({PEER_ROOM})")
        while True:
            i = self._next % PEER_ROOM
            self._next += 1
            if i not in self._held and i != self._own:
                break
        self.present.append(i)
        self._held.add(i)
        return i

    def remove_oldest(self) -> int:
        i = self.present.popleft()
        self._held.discard(i)
        return i


async def drive(
    node: Node, peers: Population, rate: float, seconds: float, batch: float
) -> tuple[dict[tuple[str, str], float], float]:
    """Issue the writes; {(kind, dst): time issued}, and the time of the last write. ``batch`` > 0: the
    changes due within each ``batch`` seconds go as one etcd transaction (one revision), issued when the
    first of them is due; 0: one request per change."""
    issued: dict[tuple[str, str], float] = {}
    tasks: set[asyncio.Task[object]] = set()
    async with node.etcd_client() as client:
        lease = await client.grant(24 * 3600)
        total = int(rate * seconds)
        per_txn = max(1, int(rate * batch)) if batch > 0 else 1
        t0 = time.monotonic()
        for start in range(0, total, per_txn):
            delay = t0 + start / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            puts: list[tuple[str, bytes, int]] = []
            deletes: list[str] = []
            for k in range(start, min(total, start + per_txn)):
                if k % 2 == 0 or not peers.present:
                    i = peers.add()
                    issued[("route+", peer_subnet(i).split("/")[0])] = now
                    puts.append((peer_key(i), peer_value(i), lease))
                else:
                    i = peers.remove_oldest()
                    issued[("route-", peer_subnet(i).split("/")[0])] = now
                    deletes.append(peer_key(i))
            if batch > 0:
                task = asyncio.ensure_future(client.write_many(puts, deletes))
            elif puts:
                task = asyncio.ensure_future(client.put(*puts[0]))
            else:
                task = asyncio.ensure_future(client.delete(deletes[0]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        last = time.monotonic()
        if tasks:
            await asyncio.gather(*tasks)
    return issued, last


def measure(
    node: Node,
    procs: list,
    peers: Population,
    n: int,
    rate: float,
    seconds: float,
    settle: float,
    batch: float = 0.0,
) -> dict[str, Any]:
    monitor = KernelMonitor()
    try:
        before = cpu_now(procs)
        issued, last_write = asyncio.run(drive(node, peers, rate, seconds, batch))
        deadline = time.monotonic() + settle
        seen: dict[tuple[str, str], float] = {}
        while time.monotonic() < deadline:
            for ev in list(monitor.events):
                key = (ev.kind, ev.dst)
                if key in issued and key not in seen and ev.t >= issued[key]:
                    seen[key] = ev.t
            if len(seen) == len(issued):
                break
            time.sleep(0.1)
        cpu = cpu_delta(procs, before)
    finally:
        monitor.close()
    latencies = [seen[k] - issued[k] for k in issued if k in seen]
    ms = [x * 1000 for x in latencies]
    last_change = max(seen.values()) if seen else float("nan")
    quarter = max(1, len(ms) // 4)
    ordered = [(seen[k] - issued[k]) * 1000 for k in sorted(issued, key=issued.__getitem__) if k in seen]
    return {
        "peers": n,
        "rate": rate,
        "seconds": seconds,
        "batch_ms": round(batch * 1000, 1),
        "writes": len(issued),
        "observed": len(seen),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else None,
        "first_quarter_p50_ms": round(percentile(ordered[:quarter], 50), 1),
        "last_quarter_p50_ms": round(percentile(ordered[-quarter:], 50), 1),
        "drain_after_last_write_s": round(last_change - last_write, 3),
        "keeps_up": len(seen) == len(issued) and last_change - last_write < 1.0,
        "monitor_overruns": monitor.overruns,
        "cpu_seconds": cpu,
        "rss_mb": {p.name: round(p.usage()[0], 1) for p in procs},
    }


def kernel_after(present: Iterable[int], settle: float) -> dict[str, Any]:
    """After the churn, the node's peer routes (``dev flannel.1``) against the leases left in etcd: the
    subnets missing from the kernel and those it still holds, waited for up to ``settle`` seconds.
    A change the monitor missed shows here only if the kernel missed it too."""
    want = {peer_subnet(i) for i in present}

    def differences() -> tuple[set[str], set[str]]:
        shown = subprocess.run(
            ["ip", "-4", "route", "show", "dev", "flannel.1"], capture_output=True, text=True, check=True
        ).stdout
        have = {line.split()[0] for line in shown.splitlines() if line.strip()}
        return want - have, have - want

    deadline = time.monotonic() + settle
    missing, extra = differences()
    while (missing or extra) and time.monotonic() < deadline:
        time.sleep(0.2)
        missing, extra = differences()
    return {"missing": len(missing), "extra": len(extra), "examples": sorted(missing | extra)[:5]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, default=1000, help="peers in sync before the churn (default 1000)")
    p.add_argument(
        "--rate", type=float, nargs="+", default=[100.0, 1000.0], help="changes per second (default 100 1000)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="churn duration per rate (default 10)")
    p.add_argument(
        "--settle", type=float, default=60.0, help="max seconds to wait for the kernel after the churn"
    )
    p.add_argument(
        "--batch-ms",
        type=float,
        default=10.0,
        help="changes due within this many ms go as one etcd transaction (default 10; 0: a request each)",
    )
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    results = []
    with bench_node() as node:
        write_config(node)
        write_peers(node, range(args.peers))
        _, _, sync = start_and_sync(node, args.peers)
        print(f"  N={args.peers}: in sync after {sync:.2f}s", flush=True)
        # the kernel holds every peer once the first snapshot's early parts are applied; the backend is
        # done (the full reconcile at SYNCED too) only when it reports SERVING
        socket = node.tmp / "run" / "backend.sock"
        wait_for(lambda: health_status(socket) == "SERVING", 600, "the backend SERVING", interval=0.1)
        peers = Population(args.peers, own=peer_index(own_subnet(node)))
        for rate in args.rate:
            time.sleep(2)
            r = measure(
                node,
                node.procs,
                peers,
                args.peers,
                rate,
                args.seconds,
                args.settle,
                args.batch_ms / 1000,
            )
            r["initial_sync_seconds"] = round(sync, 3)
            r["commit"] = git_commit()
            results.append(r)
            print(f"  {r}", flush=True)
        after = kernel_after(peers.present, args.settle)
        results[-1]["kernel_after"] = after
        print(f"  the kernel after the churn against etcd: {after}", flush=True)
    print(
        table(
            [
                "N",
                "rate/s",
                "writes",
                "seen",
                "p50 ms",
                "p99 ms",
                "max ms",
                "drain s",
                "keeps up",
                "backend CPU s",
                "lease CPU s",
                "backend ms/change",
                "backend peak RSS MB",
            ],
            [
                (
                    r["peers"],
                    r["rate"],
                    r["writes"],
                    r["observed"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["max_ms"],
                    r["drain_after_last_write_s"],
                    r["keeps_up"],
                    r["cpu_seconds"].get("backend_service"),
                    r["cpu_seconds"].get("lease_service"),
                    round(1000 * r["cpu_seconds"].get("backend_service", 0) / max(1, r["writes"]), 3),
                    r["rss_mb"].get("backend_service"),
                )
                for r in results
            ],
        )
    )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
