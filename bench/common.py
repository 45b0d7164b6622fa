"""What every benchmark needs: a node namespace with etcd inside, peer leases in etcd, the real
processes, a kernel object counter and monitor (raw netlink, no parsing library in the hot path:
``flannel_testkit.netlink``), and per-process peak RSS / CPU. Namespaces, ``setns``, process
wrappers, health checks and the etcd client come from the test harness, ``flannel_testkit``.

Everything lives in namespaces named ``fpb-<hex>`` created here and deleted at the end, even on
error or Ctrl-C; every process started here is killed. The bench process itself moves into the
node namespace (``setns``) right after creating it, so etcd on 127.0.0.1, the daemons, ``ip`` and
the netlink sockets all see the node's network, never the host's.
"""

from __future__ import annotations

import asyncio
import compileall
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from flannel_testkit.cluster import read_subnet_env
from flannel_testkit.etcd import EtcdClient, etcd_binary, etcd_client, port_open
from flannel_testkit.netlink import KernelCounter
from flannel_testkit.netns import Netns, create_netns, delete_netns, enter_netns, unique_name
from flannel_testkit.processes import Daemon, descendant_running, health_status, pid_usage
from flannel_testkit.wait import wait_until

T = TypeVar("T")

PREFIX = "/coreos.com/network"
NETWORK_CONFIG = {"Network": "10.0.0.0/8", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
NODE_ADDR, PEER_ADDR = "192.168.200.1", "192.168.200.2"


# --- peers -------------------------------------------------------------------------------------


#: Peers the bench's network has room for: 10.1.0.0/24 to 10.255.255.0/24.
PEER_ROOM = 255 * 256


def peer_subnet(i: int) -> str:
    """The i-th peer's subnet ``10.A.B.0/24`` (A from 1; 0 <= i < PEER_ROOM)."""
    if not 0 <= i < PEER_ROOM:
        raise ValueError(f"peer {i} is outside the bench's network (room for {PEER_ROOM})")
    return f"10.{1 + i // 256}.{i % 256}.0/24"


def peer_index(subnet: IPv4Network) -> int:
    """Which peer's subnet ``subnet`` is (the inverse of ``peer_subnet``)."""
    _, a, b, _ = subnet.network_address.packed
    return (a - 1) * 256 + b


def own_subnet(node: Node) -> IPv4Network:
    """The node's own subnet, from the subnet.env its lease service wrote."""
    return IPv4Network(read_subnet_env(node.tmp / "run" / "subnet.env")["FLANNEL_SUBNET"], strict=False)


def peer_key(i: int) -> str:
    return f"{PREFIX}/subnets/" + peer_subnet(i).replace("/", "-")


def peer_mac(i: int) -> str:
    return f"0a:58:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def peer_public_ip(i: int) -> str:
    return f"172.{16 + i // 65000}.{(i // 250) % 256}.{i % 250 + 1}"


def peer_value(i: int, *, mac: str | None = None) -> bytes:
    return json.dumps(
        {
            "PublicIP": peer_public_ip(i),
            "BackendType": "vxlan",
            "BackendData": {"VNI": 1, "VtepMAC": mac or peer_mac(i)},
        },
        separators=(",", ":"),
    ).encode()


# --- namespaces --------------------------------------------------------------------------------


def run(
    argv: Sequence[str], *, stdin: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return proc


class Namespaces:
    """Creates ``fpb-*`` namespaces and deletes every one of them in :meth:`close`."""

    def __init__(self) -> None:
        self.tag = unique_name("fpb")
        self.made: list[str] = []

    def add(self, suffix: str) -> str:
        name = create_netns(f"{self.tag}{suffix}").name
        self.made.append(name)
        return name

    def close(self) -> None:
        for name in reversed(self.made):
            delete_netns(name)
        self.made.clear()


def node_with_underlay(nss: Namespaces, suffix: str = "") -> str:
    """A node namespace whose ``eth0`` (192.168.200.1/24) is a veth to a second namespace (.2)."""
    node = nss.add(suffix or "n")
    other = nss.add((suffix or "n") + "u")
    Netns(node).ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", other)
    for ns, addr in ((node, NODE_ADDR), (other, PEER_ADDR)):
        Netns(ns).ip("addr", "add", f"{addr}/24", "dev", "eth0")
        Netns(ns).ip("link", "set", "eth0", "up")
    return node


# --- processes ---------------------------------------------------------------------------------


class Proc(Daemon):
    """One process started by the bench (in its own process group), with peak RSS and CPU."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        super().__init__("", argv, log_path, env=env, cwd=REPO)
        self.name = name
        self.start()
        self.started = time.monotonic()
        self.started_pid = self.pid
        self.final: tuple[float, float] | None = None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def usage(self) -> tuple[float, float]:
        """(peak RSS in MB, CPU seconds) so far; the last values seen once it has exited."""
        self.final = pid_usage(self.started_pid) or self.final
        return self.final or (0.0, 0.0)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.usage()
        return super().stop(sig, timeout)

    def tail(self, n: int = 3000) -> str:
        return self.log()[-n:]


class Supervised:
    """A daemon that ``flanneld`` started (found by its module name among flanneld's descendants): peak RSS
    and CPU are read from /proc like a :class:`Proc`'s, the last values kept once it is gone."""

    def __init__(self, name: str, module: str, parent: Proc) -> None:
        self.name = name
        self.module = module
        self.parent = parent
        self.final: tuple[float, float] | None = None

    def alive(self) -> bool:
        return self.parent.alive()

    def usage(self) -> tuple[float, float]:
        pid = descendant_running(self.parent.started_pid, self.module)
        if pid is not None:
            self.final = pid_usage(pid) or self.final
        return self.final or (0.0, 0.0)

    def tail(self, n: int = 3000) -> str:
        return self.parent.tail(n)


@dataclass
class Node:
    """The node namespace (this process is inside it), its temp dir, and the processes running."""

    ns: str
    tmp: Path
    nss: Namespaces
    procs: list[Proc] = field(default_factory=list)
    etcd_url: str = "http://127.0.0.1:2379"

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self.tmp / f"{name}.log", env)
        self.procs.append(proc)
        return proc

    def etcd_client(self) -> EtcdClient:
        """A client of this node's etcd (``async with`` it)."""
        return etcd_client(self.etcd_url)

    def start_etcd(self) -> Proc:
        data = Path(
            tempfile.mkdtemp(prefix="fpb-etcd-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
        )
        self._etcd_data = data
        proc = self.start(
            "etcd",
            [
                etcd_binary(),
                "--name",
                "bench",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                self.etcd_url,
                "--advertise-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "bench=http://127.0.0.1:2380",
                "--log-level",
                "error",
                "--quota-backend-bytes",
                str(4 << 30),
                "--snapshot-count",
                "1000000",
            ],
        )
        wait_for(lambda: port_open("127.0.0.1", 2379) or not proc.alive(), 30, "etcd listening")
        if not proc.alive():
            raise RuntimeError(f"etcd exited: {proc.tail()}")
        return proc

    def start_lease_service(self, run_dir: Path | None = None) -> Proc:
        run_dir = run_dir or self.tmp / "run"
        run_dir.mkdir(exist_ok=True)
        return self.start(
            "lease_service",
            [
                sys.executable,
                "-m",
                "lease_service",
                "--run-dir",
                str(run_dir),
                "--etcd-endpoints",
                self.etcd_url,
                "--iface",
                "eth0",
            ],
        )

    def start_backend(self, run_dir: Path | None = None, env: dict[str, str] | None = None) -> Proc:
        run_dir = run_dir or self.tmp / "run"
        run_dir.mkdir(exist_ok=True)
        return self.start(
            "backend_service", [sys.executable, "-m", "backend_service", "--run-dir", str(run_dir)], env
        )

    def start_flanneld(
        self, run_dir: Path | None = None, extra: Sequence[str] | None = None
    ) -> tuple[Proc, Supervised, Supervised]:
        """``flanneld`` as an operator starts it (privileges, health gate and all); the two daemons it runs.
        ``extra``: the subnet manager's flags (default: this node's etcd)."""
        run_dir = run_dir or self.tmp / "run"
        run_dir.mkdir(exist_ok=True)
        store = ["--etcd-endpoints", self.etcd_url] if extra is None else list(extra)
        # --lease-user root: the default lease user (nobody) can run neither this checkout's venv (under
        # /root) nor reach the bench's private tmp dir; the privilege changes nothing that is measured
        flanneld = self.start(
            "flanneld",
            [
                sys.executable,
                "-m",
                "supervisor",
                "--run-dir",
                str(run_dir),
                *store,
                "--iface",
                "eth0",
                "--lease-user",
                "root",
            ],
        )
        return (
            flanneld,
            Supervised("lease_service", "lease_service", flanneld),
            Supervised("backend_service", "backend_service", flanneld),
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        data: Path | None = getattr(self, "_etcd_data", None)
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll until ``cond()`` is true; the monotonic time it became true. Raises on timeout."""
    wait_until(cond, timeout, interval, what)
    return time.monotonic()


PACKAGES = ("backend_service", "lease_service", "supervisor", "flannel_rpc", "flannel_flags", "proto")


def compile_checkout() -> None:
    """Byte-compile the daemons' packages, as installing them does (pip compiles what it installs): with
    PYTHONDONTWRITEBYTECODE set, every start would otherwise compile ~100 modules from source."""
    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)


@contextmanager
def bench_node(keep_tmp: bool = False) -> Iterator[Node]:
    """A node namespace with an underlay, this process inside it, etcd running; all torn down after."""
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (network namespaces)")
    compile_checkout()
    nss = Namespaces()
    tmp = Path(tempfile.mkdtemp(prefix="fpb-"))
    node: Node | None = None

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        ns = node_with_underlay(nss)
        enter_netns(ns)
        node = Node(ns, tmp, nss)
        node.start_etcd()
        yield node
    finally:
        if node is not None:
            node.close()
        nss.close()
        signal.signal(signal.SIGTERM, old)
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


# --- etcd --------------------------------------------------------------------------------------


def etcd_call(node: Node, fn: Callable[[EtcdClient], Awaitable[T]]) -> T:
    """Run ``await fn(client)`` with a fresh etcd client on its own event loop."""

    async def go() -> T:
        async with node.etcd_client() as client:
            return await fn(client)

    return asyncio.run(go())


def write_config(node: Node) -> None:
    etcd_call(node, lambda c: c.put(f"{PREFIX}/config", json.dumps(NETWORK_CONFIG).encode()))


def write_peers(node: Node, indices: Sequence[int], concurrency: int = 64) -> int:
    """Write peer leases (one shared etcd lease of 24 h, as flannel's leases carry one); the etcd lease id."""

    async def go(client: EtcdClient) -> int:
        lease = await client.grant(24 * 3600)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.put(peer_key(i), peer_value(i), lease=lease)

        await asyncio.gather(*(one(i) for i in indices))
        return int(lease)

    return etcd_call(node, go)


# --- reporting ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pastes straight into the README)."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    out = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(out)


def write_json(path: str | None, data: object) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


def git_commit() -> str:
    proc = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip()


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def lease_serving(node: Node, lease: Proc) -> bool:
    """True once the lease service answers grpc.health.v1 with SERVING (what the supervisor waits for)."""
    if not lease.alive():
        raise RuntimeError(f"lease_service exited {lease.returncode}:\n{lease.tail()}")
    sock = node.tmp / "run" / "lease.sock"
    return sock.exists() and health_status(sock) == "SERVING"


def start_both(node: Node, supervised: bool = True) -> tuple[Proc, Proc, float]:
    """Start the lease service, then the backend: once the lease service is SERVING (as the supervisor
    does) or at once. (lease, backend, seconds until the lease service served, or 0)."""
    t0 = time.monotonic()
    lease = node.start_lease_service()
    serving = 0.0
    if supervised:
        serving = wait_for(lambda: lease_serving(node, lease), 600, "the lease service SERVING") - t0
    return lease, node.start_backend(), serving


def start_and_sync(node: Node, n: int, timeout: float = 600) -> tuple[Proc, Proc, float]:
    """Start the lease service and the backend; wait until the kernel holds ``n`` peers. (lease, backend, seconds)."""
    counter = KernelCounter()
    try:
        t0 = time.monotonic()
        lease, backend, _ = start_both(node)

        def synced() -> bool:
            for proc in (lease, backend):
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited {proc.returncode}:\n{proc.tail()}")
            routes, neigh, fdb = counter.counts()
            return routes >= n and neigh >= n and fdb >= n

        t1 = wait_for(synced, timeout, f"{n} peers in the kernel", interval=0.05)
        return lease, backend, t1 - t0
    finally:
        counter.close()


def usage_of(procs: Iterable[Proc | Supervised]) -> dict[str, dict[str, float]]:
    """Each process's peak RSS (``rss_mb``) and CPU seconds (``cpu_seconds``) so far, by name, rounded as
    every bench reports them."""
    usage = {p.name: p.usage() for p in procs}
    return {
        "rss_mb": {name: round(u[0], 1) for name, u in usage.items()},
        "cpu_seconds": {name: round(u[1], 2) for name, u in usage.items()},
    }


def cpu_delta(procs: Sequence[Proc], before: dict[str, float]) -> dict[str, float]:
    return {p.name: round(p.usage()[1] - before.get(p.name, 0.0), 2) for p in procs}


def cpu_now(procs: Sequence[Proc]) -> dict[str, float]:
    return {p.name: p.usage()[1] for p in procs}
