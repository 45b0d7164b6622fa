"""Kubernetes mode at scale: N Node objects shaped like kubelet's (labels, kubelet and flannel
annotations, conditions, addresses, capacity, an image list: about 10 KB of JSON each) in the test
Kubernetes API server (flannel_testkit/kubeapi/, backed by the bench's real etcd), and ``flanneld
--kube-subnet-mgr`` started as users start it.

1. Initial sync: from starting ``flanneld`` until the kernel holds all N peers (counted from the kernel's
   netlink notifications, checked by one dump at the end), against ``ip -batch`` + ``bridge -batch``
   loading the same 3N objects in the same run; with the time the test API server itself takes to list
   every Node to a client that does nothing with them (in the lease service's pages, and in one answer),
   how long the lease service's own list took (from its log: the interface found, then the lease stream
   ready: every Node listed and decoded) and when it first answered SERVING.
2. Idle: the lease service's CPU over ``--idle`` seconds with nothing written (its timers, gRPC, the
   server's bookmarks and the supervisor's probes), reported per second and subtracted below.
3. Heartbeats: kubelet-like status updates that change no lease (``lastHeartbeatTime`` of every
   condition), at each ``--rates`` per second for ``--seconds``, written to the API server's etcd the way
   the API server stores them by a writer process of its own (``bench/kube_writer.py``). First alone: the
   lease service's CPU per heartbeat net of idle, with no lease change in the window. Then again with one
   real lease change (a new Node) every 0.2 s; its latency is timed from the write (and from etcd's
   acknowledgement of it) to its route in the kernel, and split at the moment a ``WatchLeases`` watcher
   receives it (API server + lease service | backend + kernel). Reported: lease service CPU per update
   (gross, and net of the idle CPU: the new Nodes' work included), peak RSS, lease events streamed to the
   watcher (only the new Nodes should be), latency p50/p99.
4. The wakeup floor, per rate: the same heartbeats written again while ``bench/kube_floor.py``, a bare
   asyncio watcher that only counts events, measures its own CPU per update (``--no-floor`` skips it): the
   price of one wake per event. The lease service reads the watch in a thread that holds reads while events
   come fast (``kube_api._WatchReader``), so several events share a wake and it can cost less than this.

    sudo .venv/bin/python bench/kube_scale.py --nodes 1000 5000 --rates 50 500 --seconds 10 --json kube.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    NODE_ADDR,
    Node,
    bench_node,
    git_commit,
    peer_mac,
    peer_public_ip,
    peer_subnet,
    percentile,
    table,
    usage_of,
    wait_for,
    write_json,
)
from bench.initial_sync import baseline
from flannel_testkit.kubeapi.nodes import make_node
from flannel_testkit.netlink import KernelMonitor, KernelTally
from flannel_testkit.processes import pid_usage

KUBE_PREFIX = "/registry-bench"
ANNOTATION = "flannel.alpha.coreos.com"
SELF = "bench-self"
SELF_CIDR = "10.255.255.0/24"
PAGE_SIZE = 100  # Nodes per list page, as the lease service asks (lease_service/subnet/kube_api.py)
NET_CONF = {"Network": "10.0.0.0/8", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}


def kube_node(
    i: int, name: str | None = None, cidr: str | None = None, heartbeat: str = ""
) -> dict[str, Any]:
    """Node ``i`` as kubelet and flannel leave it: ~10 KB of JSON, most of it the image list (the test API
    server's Node, with a cloud node's labels, capacity, conditions and images, and flannel's annotations)."""
    name = name or f"node-{i:05d}"
    cidr = cidr or peer_subnet(i)
    now = heartbeat or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    images = [
        {
            "names": [
                f"registry.example.com/team-{k}/service-{k}@sha256:{(i * 7919 + k):064x}",
                f"registry.example.com/team-{k}/service-{k}:v1.{k}.{i % 10}",
            ],
            "sizeBytes": 10_000_000 + k * 1000,
        }
        for k in range(40)
    ]
    conditions = [
        {
            "type": t,
            "status": s,
            "reason": r,
            "message": f"kubelet has {r}",
            "lastHeartbeatTime": now,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        for t, s, r in (
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        )
    ]
    node = make_node(
        name,
        pod_cidr=cidr,
        annotations={
            "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
            f"{ANNOTATION}/kube-subnet-manager": "true",
            f"{ANNOTATION}/backend-type": "vxlan",
            f"{ANNOTATION}/backend-data": json.dumps(
                {"VNI": 1, "VtepMAC": peer_mac(i)}, separators=(",", ":")
            ),
            f"{ANNOTATION}/public-ip": peer_public_ip(i),
        },
        addresses=[{"type": "InternalIP", "address": peer_public_ip(i)}],
        labels={
            "node.kubernetes.io/instance-type": "m5.large",
            "topology.kubernetes.io/zone": "zone-a",
            "topology.kubernetes.io/region": "region-1",
        },
    )
    node["metadata"].update(uid=f"00000000-0000-4000-8000-{i:012d}", creationTimestamp="2026-01-01T00:00:00Z")
    node["spec"]["providerID"] = f"aws:///zone-a/i-{i:017x}"
    node["status"].update(
        capacity={
            "cpu": "2",
            "ephemeral-storage": "81106868Ki",
            "hugepages-2Mi": "0",
            "memory": "8049152Ki",
            "pods": "110",
        },
        allocatable={
            "cpu": "2",
            "ephemeral-storage": "74747526113",
            "hugepages-2Mi": "0",
            "memory": "7946752Ki",
            "pods": "110",
        },
        conditions=conditions,
        daemonEndpoints={"kubeletEndpoint": {"Port": 10250}},
        images=images,
    )
    node["status"]["nodeInfo"].update(
        bootID=f"b{i:07d}-0000-4000-8000-000000000000",
        kernelVersion="6.1.0-18-amd64",
        machineID=f"{i:032x}",
        systemUUID=f"{i:08d}-0000-4000-8000-000000000000",
    )
    return node


def encode(node: dict[str, Any]) -> bytes:
    """As the test API server stores a Node in etcd."""
    return json.dumps(node, sort_keys=True, separators=(",", ":")).encode()


def etcd_put_many(node: Node, items: list[tuple[str, bytes]], concurrency: int = 64) -> None:

    async def go() -> None:
        async with node.etcd_client() as client:
            sem = asyncio.Semaphore(concurrency)

            async def one(key: str, value: bytes) -> None:
                async with sem:
                    await client.put(key, value)

            await asyncio.gather(*(one(k, v) for k, v in items))

    asyncio.run(go())


def api_list_seconds(url: str, page: int) -> float:
    """Seconds the test API server takes to list every Node to a client that does nothing with them: in
    pages of ``page`` as the lease service asks (0: one answer)."""
    t = time.monotonic()
    token = ""
    while True:
        query = {"limit": str(page)} if page else {}
        if token:
            query["continue"] = token
        with urllib.request.urlopen(f"{url}/api/v1/nodes?{urllib.parse.urlencode(query)}", timeout=120) as r:
            body = r.read()
        found = re.search(rb'"continue":"([^"]*)"', body[:4096])  # the list's metadata comes first
        token = found.group(1).decode() if found else ""
        if not token:
            return round(time.monotonic() - t, 3)


def logged_at(log: str, text: str, *also: str) -> float:
    """The wall time (seconds since the epoch) of flanneld's first log line holding ``text`` (and ``also``)."""
    for line in log.splitlines():
        if text in line and all(more in line for more in also):
            stamp = line.split(" ", 1)[0].rstrip("Z")
            return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()
    raise RuntimeError(f"flanneld never logged {text!r}")


def node_key(name: str) -> str:
    return f"{KUBE_PREFIX}/minions/{name}"


class LeaseEventCounter:
    """A ``WatchLeases`` watcher on the lease socket in a thread: counts events after SYNCED and notes when
    each key's first UPSERT after SYNCED arrived (``time.monotonic()``)."""

    def __init__(self, socket_path: Path) -> None:
        import grpc

        from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

        self.events = 0
        self.arrived: dict[str, float] = {}
        self.synced = threading.Event()
        self._channel = grpc.insecure_channel(f"unix:{socket_path}")
        self._call = lease_pb2_grpc.LeaseServiceStub(self._channel).WatchLeases(
            lease_pb2.WatchLeasesRequest()
        )
        self._kinds = lease_pb2.WatchLeasesResponse
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import grpc

        try:
            for msg in self._call:
                if msg.kind == self._kinds.SYNCED:
                    self.synced.set()
                elif msg.kind == self._kinds.DELTA and self.synced.is_set():
                    now = time.monotonic()
                    self.events += len(msg.events)
                    for event in msg.events:
                        self.arrived.setdefault(event.lease.key, now)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self._call.cancel()
        self._channel.close()
        self.thread.join(2)


def wakeup_floor(node: Node, api_url: str, n: int, rate: float, seconds: float, first_new: int) -> float:
    """CPU ms per update of ``bench/kube_floor.py`` (a bare watcher) under the same heartbeats, written again
    (a phase of its own: a second watcher would double the test API server's work during the measured one)."""
    floor = subprocess.Popen(
        [sys.executable, "-m", "bench.kube_floor", api_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert floor.stdin is not None and floor.stdout is not None
        if floor.stdout.readline().strip() != "ready":
            raise RuntimeError("the floor watcher did not start")
        wrote = Writer(node, n, rate, seconds, first_new).run()
        time.sleep(1.0)
        floor.stdin.write("stop\n")
        floor.stdin.flush()
        got = json.loads(floor.stdout.readline())
        return round(got["cpu_seconds"] * 1000 / max(int(wrote["writes"]), 1), 3)
    finally:
        if floor.poll() is None:
            floor.kill()
        floor.wait()


class Writer:
    """``bench/kube_writer.py`` in a process of its own, started and ready (every Node's JSON prepared)."""

    def __init__(
        self, node: Node, n: int, rate: float, seconds: float, first_new: int, new_nodes: bool = True
    ) -> None:
        argv = [sys.executable, "-m", "bench.kube_writer", "--etcd", node.etcd_url, "--nodes", str(n)]
        argv += ["--rate", str(rate), "--seconds", str(seconds), "--first-new", str(first_new)]
        argv += [] if new_nodes else ["--new-every", "0"]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"the heartbeat writer did not start: {line!r}")

    def run(self) -> dict[str, Any]:
        """Start writing; the writer's result once it is done (see ``kube_writer.write``)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.close()
        if not line:
            raise RuntimeError("the heartbeat writer failed")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def measure(
    n: int, rates: list[float], seconds: float, idle: float, timeout: float, floor: bool = True
) -> dict[str, Any]:
    from flannel_testkit.kubeapi import KubeApiProcess

    with bench_node() as node:
        t = time.monotonic()
        items = [(node_key(f"node-{i:05d}"), encode(kube_node(i))) for i in range(n)]
        size = sum(len(v) for _, v in items) / max(n, 1)
        me = kube_node(n + 100_000, name=SELF, cidr=SELF_CIDR)
        me["status"]["addresses"] = [{"type": "InternalIP", "address": NODE_ADDR}]
        for key in ("backend-type", "backend-data", "public-ip", "kube-subnet-manager"):
            me["metadata"]["annotations"].pop(f"{ANNOTATION}/{key}")
        etcd_put_many(node, [*items, (node_key(SELF), encode(me))])
        print(
            f"  N={n}: wrote {n} Nodes ({size / 1024:.1f} KB each) in {time.monotonic() - t:.1f}s", flush=True
        )
        base = baseline(node.nss, n)
        print(f"  N={n}: baseline ip/bridge -batch {base:.3f}s", flush=True)
        api = KubeApiProcess(node.etcd_url, KUBE_PREFIX, log_path=node.tmp / "kubeapi.log").start()
        try:
            conf = node.tmp / "net-conf.json"
            conf.write_text(json.dumps(NET_CONF))
            listing = {page: api_list_seconds(api.url, page) for page in (PAGE_SIZE, 0)}
            print(
                f"  N={n}: the test API server lists every Node in {listing} s (by page size, 0: one answer)"
            )
            tally = KernelTally()

            def servers_cpu() -> dict[str, float]:
                """The bench's own servers' CPU seconds so far (they share the machine with the node)."""
                etcd = next(p for p in node.procs if p.name == "etcd")
                assert api.proc is not None
                return {"api_server": (pid_usage(api.proc.pid) or (0, 0))[1], "etcd": etcd.usage()[1]}

            servers0 = servers_cpu()
            t0, t0_wall = time.monotonic(), time.time()
            flanneld, lease, backend = node.start_flanneld(
                extra=[
                    "--kube-subnet-mgr",
                    "--kube-api-url",
                    api.url,
                    "--net-config-path",
                    str(conf),
                    "--node-name",
                    SELF,
                ]
            )

            def synced() -> bool:
                lease.usage()
                backend.usage()
                if not flanneld.alive():
                    raise RuntimeError(f"flanneld exited:\n{flanneld.tail()}")
                if tally.overruns:
                    raise RuntimeError(
                        "the kernel's notifications overran the tally's socket: counts unknown"
                    )
                routes, neigh, fdb = tally.counts()
                return routes >= n and neigh >= n and fdb >= n

            sync = wait_for(synced, timeout, f"{n} peers in the kernel", interval=0.05) - t0
            servers1 = servers_cpu()
            cpu_to_sync = {
                "flanneld": flanneld.usage()[1],
                "lease_service": lease.usage()[1],
                "backend_service": backend.usage()[1],
                **{name: servers1[name] - servers0[name] for name in servers1},
            }
            first = tally.first - t0 if tally.first is not None else sync
            tally.close_and_check(n)
            log = flanneld.log()
            serving = logged_at(log, "lease-service health: ", "-> SERVING") - t0_wall
            # the lease service's list: from its last step before it (the interface found) to the stream ready
            listed = logged_at(log, "lease stream ready") - logged_at(
                log, "lease_service: external interface"
            )
            result: dict[str, Any] = {
                "nodes": n,
                "node_json_bytes": round(size),
                "seconds": round(sync, 3),
                "first_object_seconds": round(first, 3),
                "lease_serving_seconds": round(serving, 3),
                "lease_list_seconds": round(listed, 3),
                "api_list_seconds": listing[PAGE_SIZE],
                "api_list_unpaged_seconds": listing[0],
                "baseline_seconds": round(base, 3),
                "ratio": round(sync / base, 2),
                "rss_mb_after_sync": round(lease.usage()[0], 1),
                # CPU seconds from flanneld's start to the last peer in the kernel, by process: the node's
                # (flanneld and its two daemons) and the bench's servers (the test API server and etcd), which
                # share the two cores with it and which a real cluster runs elsewhere
                "cpu_seconds_to_sync": {name: round(cpu, 2) for name, cpu in cpu_to_sync.items()},
                "heartbeats": [],
                "commit": git_commit(),
            }
            watcher = LeaseEventCounter(node.tmp / "run" / "lease.sock")
            wait_for(watcher.synced.is_set, 60, "a WatchLeases watcher SYNCED")
            time.sleep(1.0)  # the sync's last gRPC calls and logs
            t_idle, cpu_idle = time.monotonic(), lease.usage()[1]
            time.sleep(idle)
            idle_cpu_per_s = (lease.usage()[1] - cpu_idle) / (time.monotonic() - t_idle)
            result["lease_idle_cpu_ms_per_s"] = round(idle_cpu_per_s * 1000, 2)
            print(f"  N={n}: lease service idle CPU {idle_cpu_per_s * 1000:.2f} ms/s", flush=True)
            next_new = n
            for rate in rates:
                # heartbeats alone first: the CPU per update they cost, with no lease change to attribute
                alone_writer = Writer(node, n, rate, seconds, next_new, new_nodes=False)
                t_alone, cpu_alone, events_alone = time.monotonic(), lease.usage()[1], watcher.events
                alone = alone_writer.run()
                time.sleep(1.0)  # let the last heartbeats be processed before reading the CPU
                cpu_alone = lease.usage()[1] - cpu_alone - idle_cpu_per_s * (time.monotonic() - t_alone)
                writer = Writer(node, n, rate, seconds, next_new)
                monitor = KernelMonitor()
                t_cpu, cpu0 = time.monotonic(), lease.usage()[1]
                events0 = watcher.events
                wrote = writer.run()
                new_nodes: dict[str, tuple[str, float, float]] = {
                    subnet: (name, issued, acked) for subnet, name, issued, acked in wrote["new_nodes"]
                }
                next_new += len(new_nodes)

                def arrived(
                    monitor: KernelMonitor = monitor,
                    new_nodes: dict[str, tuple[str, float, float]] = new_nodes,
                ) -> bool:
                    seen = {e.dst for e in monitor.events if e.kind == "route+"}
                    return all(dst in seen for dst in new_nodes)

                wait_for(arrived, 30, "every new Node's route")
                time.sleep(1.0)  # let the last heartbeats be processed before reading the CPU
                cpu = lease.usage()[1] - cpu0
                cpu_seconds = time.monotonic() - t_cpu
                monitor.close()
                first_seen: dict[str, float] = {}
                for e in monitor.events:
                    if e.kind == "route+" and e.dst in new_nodes:
                        first_seen.setdefault(e.dst, e.t)
                lat = [(first_seen[d] - issued) * 1000 for d, (_, issued, _) in new_nodes.items()]
                lat_acked = [(first_seen[d] - acked) * 1000 for d, (_, _, acked) in new_nodes.items()]
                to_stream = [
                    (watcher.arrived[name] - issued) * 1000
                    for name, issued, _ in new_nodes.values()
                    if name in watcher.arrived
                ]
                to_kernel = [
                    (first_seen[d] - watcher.arrived[name]) * 1000
                    for d, (name, _, _) in new_nodes.items()
                    if name in watcher.arrived
                ]
                writes = int(wrote["writes"])
                net = cpu - idle_cpu_per_s * cpu_seconds
                row = {
                    "rate": rate,
                    "writes": writes,
                    "writer_behind_s": wrote["behind_seconds"],
                    "lease_cpu_ms_per_update": round(cpu * 1000 / writes, 3),
                    "lease_cpu_ms_per_update_net": round(net * 1000 / writes, 3),
                    "lease_cpu_ms_per_heartbeat_alone_net": round(cpu_alone * 1000 / int(alone["writes"]), 3),
                    "lease_events_heartbeats_alone": events0 - events_alone,
                    "lease_events": watcher.events - events0,
                    "new_nodes": len(new_nodes),
                    "latency_ms_p50": round(percentile(lat, 50), 1),
                    "latency_ms_p99": round(percentile(lat, 99), 1),
                    "latency_from_ack_ms_p50": round(percentile(lat_acked, 50), 1),
                    "latency_from_ack_ms_p99": round(percentile(lat_acked, 99), 1),
                    "to_lease_stream_ms_p50": round(percentile(to_stream, 50), 1),
                    "to_lease_stream_ms_p99": round(percentile(to_stream, 99), 1),
                    "stream_to_kernel_ms_p50": round(percentile(to_kernel, 50), 1),
                    "stream_to_kernel_ms_p99": round(percentile(to_kernel, 99), 1),
                    "lease_rss_mb": round(lease.usage()[0], 1),
                }
                if floor:
                    row["floor_ms_per_update"] = wakeup_floor(node, api.url, n, rate, seconds, next_new)
                    next_new += int(seconds / 0.2) + 1
                result["heartbeats"].append(row)
                print(f"  N={n} {rate}/s: {row}", flush=True)
            watcher.close()
            result.update(usage_of((flanneld, lease, backend)))
            return result
        finally:
            api.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[1000], help="Node counts (default 1000)")
    p.add_argument(
        "--rates", type=float, nargs="+", default=[50, 500], help="heartbeats per second (default 50 500)"
    )
    p.add_argument("--seconds", type=float, default=10, help="seconds per heartbeat rate (default 10)")
    p.add_argument("--idle", type=float, default=10, help="seconds of idle CPU measured (default 10)")
    p.add_argument(
        "--no-floor", action="store_true", help="skip the wakeup floor phase (bench/kube_floor.py) per rate"
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the kernel (default 600)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    results = [
        measure(n, args.rates, args.seconds, args.idle, args.timeout, not args.no_floor) for n in args.nodes
    ]
    print(
        table(
            [
                "N",
                "KB/Node",
                "API server lists in s (paged / one answer)",
                "lease service lists in s",
                "lease service SERVING s",
                "first object s",
                "all peers s",
                "ip -batch s",
                "ratio",
                "CPU s to sync: lease / backend / flanneld; API server / etcd",
                "lease RSS MB",
            ],
            [
                (
                    r["nodes"],
                    round(r["node_json_bytes"] / 1024, 1),
                    f"{r['api_list_seconds']} / {r['api_list_unpaged_seconds']}",
                    r["lease_list_seconds"],
                    r["lease_serving_seconds"],
                    r["first_object_seconds"],
                    r["seconds"],
                    r["baseline_seconds"],
                    r["ratio"],
                    "{lease_service} / {backend_service} / {flanneld}; {api_server} / {etcd}".format(
                        **r["cpu_seconds_to_sync"]
                    ),
                    r["rss_mb"]["lease_service"],
                )
                for r in results
            ],
        )
    )
    print(
        table(
            [
                "N",
                "heartbeats/s",
                "written",
                "lease idle CPU ms/s",
                "lease CPU ms/update (net of idle)",
                "heartbeats alone: net ms/update, lease events",
                "floor ms/update",
                "lease events",
                "new Nodes",
                "latency p50 / p99 ms",
                "from etcd ack p50 / p99 ms",
                "to lease stream p50 / p99 ms",
                "lease RSS MB",
            ],
            [
                (
                    r["nodes"],
                    h["rate"],
                    h["writes"],
                    r["lease_idle_cpu_ms_per_s"],
                    f"{h['lease_cpu_ms_per_update']} ({h['lease_cpu_ms_per_update_net']})",
                    f"{h['lease_cpu_ms_per_heartbeat_alone_net']}, {h['lease_events_heartbeats_alone']}",
                    h.get("floor_ms_per_update", "-"),
                    h["lease_events"],
                    h["new_nodes"],
                    f"{h['latency_ms_p50']} / {h['latency_ms_p99']}",
                    f"{h['latency_from_ack_ms_p50']} / {h['latency_from_ack_ms_p99']}",
                    f"{h['to_lease_stream_ms_p50']} / {h['to_lease_stream_ms_p99']}",
                    h["lease_rss_mb"],
                )
                for r in results
                for h in r["heartbeats"]
            ],
        )
    )
    write_json(args.json, results[0] if len(results) == 1 else results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
