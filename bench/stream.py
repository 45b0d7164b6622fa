"""Stream: ``WatchLeases`` events per second to 1 and to 100 concurrent watchers, and a resume after a
lease-service restart with N peers in sync (time until the backend follows again, and the kernel
changes it made: should be zero).

    sudo .venv/bin/python bench/stream.py --peers 1000 --watchers 1 100 --deltas 2000 \\
        --resume-peers 10000 --json stream.json

Watchers are grpc.aio streams in this process, one channel each. Snapshot rate: N leases x W
watchers / time until every watcher saw SYNCED. Delta rate: M leases written to etcd as fast as
the client can (64 in flight) / time until every watcher saw all M upserts (the etcd write time
alone is reported next to it: the stream cannot be faster than the store).

Resume: the lease service is stopped (SIGTERM) and started again; then one probe lease is
written. "Back in sync" is when the probe's route is in the kernel (the backend resumed and
follows the store again); kernel changes are every route/neighbour/FDB notification from the
restart until then, minus the probe's own three.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Node,
    bench_node,
    git_commit,
    lease_serving,
    peer_key,
    peer_subnet,
    peer_value,
    start_and_sync,
    table,
    usage_of,
    wait_for,
    write_config,
    write_json,
    write_peers,
)
from flannel_testkit.netlink import KernelCounter, KernelMonitor
from flannel_testkit.processes import health_status


async def watch_run(
    node: Node, socket_path: Path, n: int, watchers: int, deltas: int, first: int
) -> dict[str, Any]:
    import grpc

    from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

    Msg = lease_pb2.WatchLeasesResponse
    synced_at: list[float] = []
    done_at: list[float] = []
    delta_messages: list[int] = []
    all_synced = asyncio.Event()
    channels = [grpc.aio.insecure_channel(f"unix:{socket_path}") for _ in range(watchers)]

    async def watcher(channel: grpc.aio.Channel) -> None:
        stub = lease_pb2_grpc.LeaseServiceStub(channel)
        seen = messages = 0
        async for msg in stub.WatchLeases(lease_pb2.WatchLeasesRequest(), wait_for_ready=True):
            if msg.kind == Msg.SYNCED and not synced_at[len(synced_at) :]:
                synced_at.append(time.monotonic())
                if len(synced_at) == watchers:
                    all_synced.set()
            elif msg.kind == Msg.DELTA:
                messages += 1
                seen += sum(
                    1
                    for e in msg.events
                    if e.type == lease_pb2.LeaseEvent.UPSERT and e.lease.key.startswith("10.")
                )
                if seen >= deltas:
                    done_at.append(time.monotonic())
                    delta_messages.append(messages)
                    return

    try:
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(watcher(ch)) for ch in channels]
        await asyncio.wait_for(all_synced.wait(), 600)
        snapshot_s = max(synced_at) - t0
        async with node.etcd_client() as client:
            lease = await client.grant(24 * 3600)
            sem = asyncio.Semaphore(64)

            async def put(i: int) -> None:
                async with sem:
                    await client.put(peer_key(i), peer_value(i), lease=lease)

            t1 = time.monotonic()
            await asyncio.gather(*(put(i) for i in range(first, first + deltas)))
            write_s = time.monotonic() - t1
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
        delta_s = max(done_at) - t1
    finally:
        for ch in channels:
            await ch.close()
    return {
        "peers": n,
        "watchers": watchers,
        "snapshot_seconds": round(snapshot_s, 3),
        "snapshot_events_per_s": round(n * watchers / snapshot_s),
        "deltas": deltas,
        "etcd_write_seconds": round(write_s, 3),
        "delta_seconds": round(delta_s, 3),
        "delta_events_per_s_per_watcher": round(deltas / delta_s),
        "delta_events_per_s_total": round(deltas * watchers / delta_s),
        # DELTA messages each watcher received for the M leases (mean): fewer when etcd's watch or the
        # lease service batched more revisions into one message
        "delta_messages_per_watcher": round(sum(delta_messages) / len(delta_messages)),
    }


async def listing_complete(socket_path: Path) -> None:
    """Until a watcher gets SYNCED: the lease service's first listing of the store is complete."""
    import grpc

    from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

    async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
        stub = lease_pb2_grpc.LeaseServiceStub(channel)
        async for msg in stub.WatchLeases(lease_pb2.WatchLeasesRequest(), wait_for_ready=True):
            if msg.kind == lease_pb2.WatchLeasesResponse.SYNCED:
                return


def throughput(n: int, watchers_list: list[int], deltas: int) -> list[dict[str, Any]]:
    out = []
    with bench_node() as node:
        write_config(node)
        write_peers(node, range(n))
        lease = node.start_lease_service()
        sock = node.tmp / "run" / "lease.sock"
        # the lease service answers UNAVAILABLE until it serves: watch once it does, as the backend does
        wait_for(lambda: lease_serving(node, lease), 600, "the lease service SERVING")
        # it serves while it still lists the store (since 5ecd849): the CPU counted below starts once the
        # listing is complete, or the first run's would hold the listing's (~0.3 s at 10,000 leases)
        asyncio.run(listing_complete(sock))
        first = n
        for w in watchers_list:
            before = lease.usage()[1]
            r = asyncio.run(watch_run(node, sock, n, w, deltas, first))
            first += deltas
            cpu = lease.usage()[1] - before
            r["lease_service_cpu_seconds"] = round(cpu, 2)
            # snapshot and deltas together: every event the lease service sent, to every watcher
            r["lease_cpu_us_per_event_per_watcher"] = round(cpu / ((n + deltas) * w) * 1e6, 2)
            r["lease_service_rss_mb"] = round(lease.usage()[0], 1)
            print(f"  {r}", flush=True)
            out.append(r)
    return out


def resume(n: int, timeout: float) -> dict[str, Any]:
    with bench_node() as node:
        write_config(node)
        write_peers(node, range(n))
        lease, _, sync = start_and_sync(node, n, timeout)
        print(f"  resume: N={n} in sync after {sync:.2f}s", flush=True)
        socket = node.tmp / "run" / "backend.sock"
        wait_for(lambda: health_status(socket) == "SERVING", timeout, "the backend SERVING", interval=0.1)
        time.sleep(3)  # let the backend finish reporting
        backend_before = next(p for p in node.procs if p.name == "backend_service").usage()[0]
        monitor = KernelMonitor()
        counter = KernelCounter()
        try:
            t0 = time.monotonic()
            lease.stop()
            node.procs.remove(lease)
            lease = node.start_lease_service()
            probe = 65000  # 10.254.232.0/24: beyond any N used here
            from bench.common import etcd_call

            etcd_call(node, lambda c: c.put(peer_key(probe), peer_value(probe)))
            probe_dst = peer_subnet(probe).split("/")[0]
            t1 = wait_for(
                lambda: any(e.kind == "route+" and e.dst == probe_dst for e in list(monitor.events)),
                timeout,
                "the probe lease's route",
            )
            time.sleep(2)  # anything the resume does late still counts
            events = list(monitor.events)
            counts = counter.counts()
        finally:
            monitor.close()
            counter.close()
        probe_events = 3  # its route, neighbour and FDB entry
        changes = len(events) - probe_events
        usage = usage_of(node.procs)
    return {
        "peers": n,
        "initial_sync_seconds": round(sync, 3),
        "resume_seconds": round(t1 - t0, 3),
        "kernel_changes": changes,
        "kernel_change_kinds": sorted({e.kind for e in events}),
        "kernel_objects_after": list(counts),
        "backend_rss_mb_before": round(backend_before, 1),
        **usage,
        "commit": git_commit(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--peers", type=int, default=1000, help="leases in the store for the throughput runs (default 1000)"
    )
    p.add_argument(
        "--watchers",
        type=int,
        nargs="*",
        default=[1, 100],
        help="concurrent watchers (default 1 100; none: skip)",
    )
    p.add_argument(
        "--deltas", type=int, default=2000, help="leases written during the delta run (default 2000)"
    )
    p.add_argument(
        "--resume-peers", type=int, default=10000, help="peers for the resume run (0: skip; default 10000)"
    )
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    runs = throughput(args.peers, args.watchers, args.deltas) if args.watchers else []
    res = resume(args.resume_peers, args.timeout) if args.resume_peers else None
    if runs:
        print(
            table(
                [
                    "N",
                    "watchers",
                    "snapshot s",
                    "snapshot ev/s",
                    "deltas",
                    "etcd write s",
                    "delta s",
                    "delta ev/s/watcher",
                    "delta ev/s total",
                    "delta msgs/watcher",
                    "lease CPU s",
                    "lease CPU µs/event/watcher",
                    "lease RSS MB",
                ],
                [
                    (
                        r["peers"],
                        r["watchers"],
                        r["snapshot_seconds"],
                        r["snapshot_events_per_s"],
                        r["deltas"],
                        r["etcd_write_seconds"],
                        r["delta_seconds"],
                        r["delta_events_per_s_per_watcher"],
                        r["delta_events_per_s_total"],
                        r["delta_messages_per_watcher"],
                        r["lease_service_cpu_seconds"],
                        r["lease_cpu_us_per_event_per_watcher"],
                        r["lease_service_rss_mb"],
                    )
                    for r in runs
                ],
            )
        )
    if res:
        print(
            table(
                ["N", "resume s", "kernel changes", "lease RSS MB", "backend RSS MB before / after"],
                [
                    (
                        res["peers"],
                        res["resume_seconds"],
                        res["kernel_changes"],
                        res["rss_mb"].get("lease_service"),
                        f"{res['backend_rss_mb_before']} / {res['rss_mb'].get('backend_service')}",
                    )
                ],
            )
        )
    write_json(args.json, {"watch": runs, "resume": res, "commit": git_commit()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
