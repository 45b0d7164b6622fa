"""The kernel's cost of a peer route by shape: system time per route add and delete at N routes already
in the table, measured with ``ip -batch`` in a throwaway namespace (no daemon involved).

    sudo .venv/bin/python bench/route_cost.py --routes 1000 5000 10000 20000

For each shape, N routes of that shape are loaded on ``flannel.1``, then 1,000 more are added and
those 1,000 deleted, each by one ``ip -batch`` whose system time (``wait4``) is divided by 1,000.
``flannel`` is the shape flannel's vxlan backend programs (and ours, with our route protocol 70); the
others show what the cost depends on. The kernel finds an identical ``fib_info`` for every new route
by walking one hash bucket, and its hash (``fib_info_hashfn``: nexthop count, protocol, scope, preferred
source, metric, each nexthop's device) leaves out the gateway, so N routes that differ only by gateway
are N entries of one bucket: an add walks them all.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Namespaces, table, write_json

K = 1000
"""Routes added and then deleted per measurement."""

Line = Callable[[str, int], str]
SHAPES: dict[str, Line] = {
    "flannel": lambda s, i: f"route add {s}/24 via {s} dev flannel.1 onlink proto 70",
    "no gateway": lambda s, i: f"route add {s}/24 dev flannel.1 proto 70",
    "one gateway for all": lambda s, i: f"route add {s}/24 via 10.5.0.1 dev flannel.1 onlink proto 70",
    "flannel, metric i+1": lambda s, i: (
        f"route add {s}/24 via {s} dev flannel.1 onlink proto 70 metric {i + 1}"
    ),
    "flannel, protocol 70+i%16": lambda s, i: (
        f"route add {s}/24 via {s} dev flannel.1 onlink proto {70 + i % 16}"
    ),
    "flannel, table 100": lambda s, i: f"route add {s}/24 via {s} dev flannel.1 onlink proto 70 table 100",
    "gateway in a connected /8": lambda s, i: f"route add {s}/24 via {s} dev flannel.1 proto 70",
    "nexthop object each": lambda s, i: (
        f"nexthop add id {i + 1} via {s} dev flannel.1 onlink\nroute add {s}/24 nhid {i + 1} proto 70"
    ),
}


def subnet(i: int) -> str:
    return f"10.{16 + i // 256}.{i % 256}.0"


def lines(shape: str, first: int, count: int, delete: bool = False) -> list[str]:
    out: list[str] = []
    for i in range(first, first + count):
        text = SHAPES[shape](subnet(i), i)
        if delete:  # routes first (with every selector of their add: the table), then their nexthop objects
            adds = text.split("\n")
            out += [_deleting(a) for a in reversed(adds)]
        else:
            out += text.split("\n")
    return out


def _deleting(add: str) -> str:
    line = add.replace(" add ", " del ", 1)
    return line.split(" via ")[0] if line.startswith("nexthop") else line  # a nexthop goes by its id alone


def batch(ns: str, commands: list[str]) -> float:
    """System seconds of one ``ip -n ns -batch`` of ``commands``."""
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write("\n".join(commands) + "\n")
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.execvp("ip", ["ip", "-n", ns, "-batch", f.name])
            finally:
                os._exit(127)
        _, status, usage = os.wait4(pid, 0)
        if status != 0:
            raise RuntimeError(f"ip -batch failed in {ns} (status {status})")
        return usage.ru_stime
    finally:
        os.unlink(f.name)


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def measure(nss: Namespaces, shape: str, sizes: list[int]) -> list[dict[str, object]]:
    ns = nss.add(f"r{len(nss.made)}")
    ip(ns, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "nolearning")
    ip(ns, "addr", "add", "10.5.0.0/32", "dev", "flannel.1")
    ip(ns, "link", "set", "flannel.1", "up")
    if "connected" in shape:
        ip(ns, "route", "add", "10.0.0.0/8", "dev", "flannel.1", "scope", "link")
    rows: list[dict[str, object]] = []
    held = 0
    for n in sizes:
        if n > held:
            batch(ns, lines(shape, held, n - held))
            held = n
        add = batch(ns, lines(shape, n, K))
        delete = batch(ns, lines(shape, n, K, delete=True))
        rows.append(
            {
                "shape": shape,
                "routes": n,
                "add_us": round(add / K * 1e6, 1),
                "del_us": round(delete / K * 1e6, 1),
            }
        )
        print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--routes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), metavar="SHAPE")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (network namespaces)")
    print(f"load average: {os.getloadavg()}", flush=True)
    nss = Namespaces()
    results: list[dict[str, object]] = []
    try:
        for shape in args.shapes:
            results += measure(nss, shape, sorted(args.routes))
    finally:
        nss.close()
    print(f"load average: {os.getloadavg()}", flush=True)
    print(
        table(
            ["shape", "routes held", "add µs (system)", "delete µs (system)"],
            [(r["shape"], r["routes"], r["add_us"], r["del_us"]) for r in results],
        )
    )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
