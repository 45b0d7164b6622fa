"""What every benchmark needs: a node namespace with etcd inside, peer leases in etcd, the real
processes, a kernel object counter and monitor (raw netlink, no parsing library in the hot path),
and per-process peak RSS / CPU.

Everything lives in namespaces named ``fpb-<hex>`` created here and deleted at the end, even on
error or Ctrl-C; every process started here is killed. The bench process itself moves into the
node namespace (``setns``) right after creating it, so etcd on 127.0.0.1, the daemons, ``ip`` and
the netlink sockets all see the node's network, never the host's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PREFIX = "/coreos.com/network"
NETWORK_CONFIG = {"Network": "10.0.0.0/8", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
NODE_ADDR, PEER_ADDR = "192.168.200.1", "192.168.200.2"
DEVICE = "flannel.1"
RTPROT_FLANNEL = 70
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- peers -------------------------------------------------------------------------------------


def peer_subnet(i: int) -> str:
    """The i-th peer's subnet ``10.A.B.0/24`` (A from 1; room for 65,000 peers)."""
    return f"10.{1 + i // 256}.{i % 256}.0/24"


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


def setns(name: str) -> None:
    """Move this process (its main thread, before any other thread exists) into netns ``name``."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespaces:
    """Creates ``fpb-*`` namespaces and deletes every one of them in :meth:`close`."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.made: list[str] = []

    def add(self, suffix: str) -> str:
        name = f"fpb-{self.tag}{suffix}"
        run(["ip", "netns", "add", name])
        self.made.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def close(self) -> None:
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self.made.clear()


def node_with_underlay(nss: Namespaces, suffix: str = "") -> str:
    """A node namespace whose ``eth0`` (192.168.200.1/24) is a veth to a second namespace (.2)."""
    node = nss.add(suffix or "n")
    other = nss.add((suffix or "n") + "u")
    run(["ip", "-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", other])
    run(["ip", "-n", node, "addr", "add", f"{NODE_ADDR}/24", "dev", "eth0"])
    run(["ip", "-n", other, "addr", "add", f"{PEER_ADDR}/24", "dev", "eth0"])
    for ns in (node, other):
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    return node


# --- processes ---------------------------------------------------------------------------------


class Proc:
    """One process started by the bench (in its own process group), with peak RSS and CPU."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self.started = time.monotonic()
        self.final: tuple[float, float] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def usage(self) -> tuple[float, float]:
        """(peak RSS in MB, CPU seconds) so far; the last values seen once it has exited."""
        self.final = pid_usage(self.pid) or self.final
        return self.final or (0.0, 0.0)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.usage()
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def pid_usage(pid: int) -> tuple[float, float] | None:
    """(peak RSS in MB, CPU seconds) of one live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return hwm / 1024, (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, StopIteration, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), read from /proc/<pid>/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


class Supervised:
    """A daemon that ``flanneld`` started (found by its module name among flanneld's descendants): peak RSS
    and CPU are read from /proc like a :class:`Proc`'s, the last values kept once it is gone."""

    def __init__(self, name: str, module: str, parent: Proc) -> None:
        self.name = name
        self.module = module
        self.parent = parent
        self.final: tuple[float, float] | None = None

    def _pid(self) -> int | None:
        for pid in descendants(self.parent.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if self.module.encode() in argv:
                return pid
        return None

    def alive(self) -> bool:
        return self.parent.alive()

    def usage(self) -> tuple[float, float]:
        pid = self._pid()
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

    def start_etcd(self) -> Proc:
        data = Path(
            tempfile.mkdtemp(prefix="fpb-etcd-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
        )
        self._etcd_data = data
        proc = self.start(
            "etcd",
            [
                shutil.which("etcd") or "/usr/bin/etcd",
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
        wait_for(lambda: _port_open(2379) or not proc.alive(), 30, "etcd listening")
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
        data = getattr(self, "_etcd_data", None)
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll until ``cond()`` is true; the monotonic time it became true. Raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def bench_node(keep_tmp: bool = False) -> Iterator[Node]:
    """A node namespace with an underlay, this process inside it, etcd running; all torn down after."""
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (network namespaces)")
    nss = Namespaces()
    tmp = Path(tempfile.mkdtemp(prefix="fpb-"))
    node: Node | None = None

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        ns = node_with_underlay(nss)
        setns(ns)
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


def etcd_call(node: Node, fn: Callable[..., object]) -> object:
    """Run ``await fn(client)`` with a fresh EtcdClient on its own event loop."""
    from lease_service.etcd import EtcdClient, EtcdSettings

    async def go() -> object:
        async with EtcdClient(EtcdSettings(endpoints=(node.etcd_url,), call_timeout=30)) as client:
            return await fn(client)  # type: ignore[misc]

    return asyncio.run(go())


def write_config(node: Node) -> None:
    etcd_call(node, lambda c: c.put(f"{PREFIX}/config", json.dumps(NETWORK_CONFIG).encode()))


def write_peers(node: Node, indices: Sequence[int], concurrency: int = 64) -> int:
    """Write peer leases (one shared etcd lease of 24 h, as flannel's leases carry one); the etcd lease id."""

    async def go(client) -> int:  # type: ignore[no-untyped-def]
        lease = await client.grant(24 * 3600)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.put(peer_key(i), peer_value(i), lease=lease)

        await asyncio.gather(*(one(i) for i in indices))
        return int(lease)

    return int(etcd_call(node, go))  # type: ignore[arg-type]


# --- kernel: raw netlink counting and monitoring ------------------------------------------------

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NUD_PERMANENT = 0x80
AF_BRIDGE = 7
RTMGRP_NEIGH, RTMGRP_IPV4_ROUTE = 0x4, 0x40
_HDR = struct.Struct("=IHHII")


def _nl_socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.bind((0, groups))
    return sock


def ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


class KernelCounter:
    """Counts our routes (proto 70), permanent neighbours and FDB entries on flannel.1 by dump."""

    def __init__(self) -> None:
        self.sock = _nl_socket()
        self.seq = 0

    def _dump(self, msg_type: int, family: int, body: bytes, handle: Callable[[bytes, int], None]) -> None:
        self.seq += 1
        hdr = _HDR.pack(_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        self.sock.send(hdr + body)
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off < len(data):
                length, mtype, _, _, _ = _HDR.unpack_from(data, off)
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "netlink dump failed")
                handle(data, off + 16)
                off += (length + 3) & ~3

    def counts(self) -> tuple[int, int, int]:
        """(routes with proto 70, permanent neighbours on flannel.1, permanent FDB entries on flannel.1)."""
        dev = ifindex(DEVICE)
        n = [0, 0, 0]

        def route(data: bytes, off: int) -> None:
            if data[off + 5] == RTPROT_FLANNEL:
                n[0] += 1

        def neigh(which: int) -> Callable[[bytes, int], None]:
            def h(data: bytes, off: int) -> None:
                idx, state = struct.unpack_from("=iH", data, off + 4)
                if idx == dev and state & NUD_PERMANENT:
                    n[which] += 1

            return h

        self._dump(
            RTM_GETROUTE,
            socket.AF_INET,
            struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0),
            route,
        )
        if dev:
            self._dump(
                RTM_GETNEIGH, socket.AF_INET, struct.pack("=BxxxiHBB", socket.AF_INET, 0, 0, 0, 0), neigh(1)
            )
            self._dump(RTM_GETNEIGH, AF_BRIDGE, struct.pack("=BxxxiHBB", AF_BRIDGE, 0, 0, 0, 0), neigh(2))
        return n[0], n[1], n[2]

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class KernelEvent:
    t: float
    kind: str  # "route+", "route-", "neigh+", "neigh-"
    dst: str  # route destination "10.A.B.0", or "" for neighbour/FDB events


class KernelMonitor:
    """Records every IPv4 route and neighbour/FDB change with the time it arrived (a thread)."""

    def __init__(self) -> None:
        self.sock = _nl_socket(RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH)
        self.sock.settimeout(0.2)
        self.events: list[KernelEvent] = []
        self.overruns = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        recv = self.sock.recv
        append = self.events.append
        while not self._stop:
            try:
                data = recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: we fell behind
                self.overruns += 1
                continue
            now = time.monotonic()
            off = 0
            while off + 16 <= len(data):
                length, mtype, _, _, _ = _HDR.unpack_from(data, off)
                if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                    dst = ""
                    a = off + 16 + 12
                    end = off + length
                    while a + 4 <= end:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if atype == 1 and alen == 8:  # RTA_DST
                            dst = socket.inet_ntoa(data[a + 4 : a + 8])
                            break
                        a += (alen + 3) & ~3
                    if data[off + 16 + 5] == RTPROT_FLANNEL or mtype == RTM_DELROUTE:
                        append(KernelEvent(now, "route+" if mtype == RTM_NEWROUTE else "route-", dst))
                elif mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
                    append(KernelEvent(now, "neigh+" if mtype == RTM_NEWNEIGH else "neigh-", ""))
                off += (max(length, 16) + 3) & ~3

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


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
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if not lease.alive():
        raise RuntimeError(f"lease_service exited {lease.popen.returncode}:\n{lease.tail()}")
    sock = node.tmp / "run" / "lease.sock"
    if not sock.exists():
        return False
    try:
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


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
                    raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
            routes, neigh, fdb = counter.counts()
            return routes >= n and neigh >= n and fdb >= n

        t1 = wait_for(synced, timeout, f"{n} peers in the kernel", interval=0.05)
        return lease, backend, t1 - t0
    finally:
        counter.close()


def cpu_delta(procs: Sequence[Proc], before: dict[str, float]) -> dict[str, float]:
    return {p.name: round(p.usage()[1] - before.get(p.name, 0.0), 2) for p in procs}


def cpu_now(procs: Sequence[Proc]) -> dict[str, float]:
    return {p.name: p.usage()[1] for p in procs}
