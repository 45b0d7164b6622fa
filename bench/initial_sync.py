"""Initial sync: N peer leases already in etcd; time from starting the node until the kernel holds all
N peers (vxlan: a route, a neighbour and an FDB entry each).

Modes (``--modes``, each a row per N): ``flanneld`` (the default and the path users run: ``flanneld``
starts both daemons with their privileges and its health gate), ``daemons`` (the bench starts the
lease service, then the backend once the lease service answers SERVING), ``together`` (both at once).
``seconds`` counts from the first process started.

The kernel's objects are counted from its netlink notifications as they arrive (``KernelTally``), then
checked once by a dump at the end: polling dumps of up to 30,000 objects would take most of a core of
this machine (and, for the FDB, the RTNL lock) away from the node being measured, which the baseline
never pays.

Baseline, in the same run: the same 3N objects loaded into a fresh namespace with the same
``flannel.1`` device by ``bridge -batch`` (FDB) and ``ip -batch`` (neighbours, routes) from
prepared files: the practical limit.

    sudo .venv/bin/python bench/initial_sync.py --peers 1000 5000 10000 --repeat 3 --json initial_sync.json

JSON: one object per N (a list when several N are given) with ``peers``, ``seconds``,
``baseline_seconds``, ``ratio``, ``rss_mb`` and ``cpu_seconds`` per process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    NODE_ADDR,
    Namespaces,
    Proc,
    Supervised,
    bench_node,
    git_commit,
    peer_mac,
    peer_public_ip,
    peer_subnet,
    run,
    start_both,
    table,
    usage_of,
    wait_for,
    write_config,
    write_json,
    write_peers,
)
from flannel_testkit.netlink import DEVICE, KernelTally

MODES = ("flanneld", "daemons", "together")


def batch_files(n: int) -> tuple[bytes, bytes]:
    """(ip batch: neighbours then routes, bridge batch: FDB) for peers 0..n-1, as the backend programs them."""
    neigh, routes, fdb = [], [], []
    for i in range(n):
        subnet = peer_subnet(i)
        gw = subnet.split("/")[0]
        neigh.append(f"neigh replace {gw} lladdr {peer_mac(i)} dev {DEVICE} nud permanent")
        routes.append(f"route replace {subnet} via {gw} dev {DEVICE} onlink proto 70")
        fdb.append(f"fdb replace {peer_mac(i)} dev {DEVICE} dst {peer_public_ip(i)} self permanent")
    return ("\n".join(neigh + routes) + "\n").encode(), ("\n".join(fdb) + "\n").encode()


def baseline(nss: Namespaces, n: int) -> float:
    """Seconds for ``bridge -batch`` + ``ip -batch`` to load the 3n objects into a fresh namespace."""
    ns = nss.add("b")
    try:
        run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"])
        run(["ip", "-n", ns, "addr", "add", f"{NODE_ADDR}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(
            [
                "ip",
                "-n",
                ns,
                "link",
                "add",
                DEVICE,
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                NODE_ADDR,
                "dev",
                "eth0",
                "dstport",
                "8472",
                "nolearning",
            ]
        )
        run(["ip", "-n", ns, "addr", "add", "10.0.0.0/32", "dev", DEVICE])
        run(["ip", "-n", ns, "link", "set", DEVICE, "up"])
        ip_batch, bridge_batch = batch_files(n)
        t0 = time.monotonic()
        run(["bridge", "-n", ns, "-batch", "-"], stdin=bridge_batch)
        run(["ip", "-n", ns, "-batch", "-"], stdin=ip_batch)
        seconds = time.monotonic() - t0
        routes = run(["ip", "-n", ns, "route", "show", "proto", "70"]).stdout.count(b"\n")
        if routes != n:
            raise RuntimeError(f"baseline: {routes} routes instead of {n}")
        return seconds
    finally:
        run(["ip", "netns", "del", ns], check=False)
        nss.made.remove(ns)


def measure(n: int, timeout: float, mode: str) -> dict[str, Any]:
    with bench_node() as node:
        write_config(node)
        t = time.monotonic()
        write_peers(node, range(n))
        print(f"  N={n}: wrote {n} leases to etcd in {time.monotonic() - t:.1f}s", flush=True)
        base = baseline(node.nss, n)
        print(f"  N={n}: baseline ip/bridge -batch {base:.3f}s", flush=True)
        tally = KernelTally()
        stages: dict[str, float] = {}
        t0 = time.monotonic()
        serving = 0.0
        procs: tuple[Proc | Supervised, ...]
        if mode == "flanneld":
            procs = node.start_flanneld()
        else:
            lease, backend, serving = start_both(node, mode == "daemons")
            procs = (lease, backend)

        def synced() -> bool:
            for proc in procs:
                proc.usage()  # a daemon's peak is read while it runs
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            if tally.overruns:
                raise RuntimeError("the kernel's notifications overran the tally's socket: counts unknown")
            routes, neigh, fdb = tally.counts()
            return routes >= n and neigh >= n and fdb >= n

        t1 = wait_for(synced, timeout, f"{n} peers in the kernel", interval=0.02)
        seconds = t1 - t0
        if tally.first is not None:
            stages["first"] = tally.first - t0
        time.sleep(1.0)  # let the backend finish its post-reconcile work before reading the peaks
        usage = usage_of((*node.procs, *procs))
        counts = tally.close_and_check(n)
    return {
        "peers": n,
        "seconds": round(seconds, 3),
        "lease_serving_seconds": round(serving, 3),
        "first_object_seconds": round(stages.get("first", seconds), 3),
        "mode": mode,
        "baseline_seconds": round(base, 3),
        "ratio": round(seconds / base, 2),
        # From the first object in the kernel to the last: the backend's programming alone.
        "programming_seconds": round(seconds - stages.get("first", seconds), 3),
        "programming_ratio": round((seconds - stages.get("first", seconds)) / base, 2),
        "kernel_objects": list(counts),
        **usage,
        "commit": git_commit(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--peers", type=int, nargs="+", default=[1000], help="peer counts to measure (default 1000)"
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the kernel (default 600)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per N and mode; the run with the median time is reported, all times are kept (default 1)",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=["flanneld", "daemons"],
        help="how the node is started, a row each (default: flanneld daemons)",
    )
    args = p.parse_args()
    results = []
    for n in args.peers:
        for mode in args.modes:
            runs = []
            for _ in range(args.repeat):
                runs.append(measure(n, args.timeout, mode))
                print(f"  N={n} {mode}: {runs[-1]}", flush=True)
            runs.sort(key=lambda r: r["seconds"])
            median = dict(runs[len(runs) // 2])
            median["all_seconds"] = [r["seconds"] for r in runs]
            bases = sorted(r["baseline_seconds"] for r in runs)
            median["all_baseline_seconds"] = bases
            median["ratio_of_medians"] = round(median["seconds"] / bases[len(bases) // 2], 2)
            results.append(median)
    rows = [
        (
            r["peers"],
            r["mode"],
            r["first_object_seconds"],
            r["seconds"],
            r["baseline_seconds"],
            r["ratio"],
            r["rss_mb"].get("lease_service"),
            r["rss_mb"].get("backend_service"),
            r["rss_mb"].get("flanneld", "-"),
            r["cpu_seconds"].get("lease_service"),
            r["cpu_seconds"].get("backend_service"),
        )
        for r in results
    ]
    print(
        table(
            [
                "N",
                "mode",
                "first object s",
                "all peers s",
                "ip -batch s",
                "ratio",
                "lease RSS MB",
                "backend RSS MB",
                "flanneld RSS MB",
                "lease CPU s",
                "backend CPU s",
            ],
            rows,
        )
    )
    write_json(args.json, results[0] if len(results) == 1 else results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
