"""A multi-node flannel cluster on one machine, made of network namespaces, for end-to-end tests
and for ``tools/demo``. Plain classes and functions (no pytest), always cleaned up.

Layout (``<id>`` is a short random suffix, so that parallel test workers never collide)::

    fpt<id>-ul     the underlay: a Linux bridge ``br0``, one veth port per node and one for etcd
    fpt<id>-etcd   a real etcd on <underlay>.250, ``eth0`` on the bridge
    fpt<id>-n<i>   node i: ``eth0`` = <underlay>.<i>/24 on the bridge, ip_forward on, running the REAL
                   lease service (no capabilities) and backend (CAP_NET_ADMIN + CAP_NET_RAW only) as
                   separate processes
    fpt<id>-p<i>   node i's "pod", made through CNI as kubelet makes pods (``flannel_testkit.cni``):
                   ``flannel-cni`` ADD in the node's namespace with the node's subnet.env, delegating to
                   the real bridge (``cni0``, the subnet's .1) and host-local (the pod gets .2, default
                   route via .1, MTU from subnet.env); DEL when the cluster goes down

With ``Cluster(flanneld=True)`` each node runs the supervisor (``python -m supervisor``), which starts
both daemons itself; ``keep=True`` leaves everything running on exit (``Cluster.down_by_id`` removes it).

Nothing touches the host's own network: every device is created inside one of these namespaces.
The host reaches the daemons through their unix sockets (pathname sockets ignore network
namespaces) and etcd from a thread that entered the etcd namespace with ``setns(2)``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from flannel_testkit import profiles
from flannel_testkit.cni import cni_call, node_cni_config, pod_address
from flannel_testkit.etcd import EtcdHttp, EtcdServer
from flannel_testkit.hostprofiles import HostProfile
from flannel_testkit.netlink import RTPROT_FLANNEL
from flannel_testkit.netns import in_netns
from flannel_testkit.processes import Daemon, close_pipes, health_status
from flannel_testkit.wait import wait_until
from supervisor.privileges import backend_launcher, lease_launcher

if TYPE_CHECKING:
    from flannel_testkit.kubeapi import KubeApiControl

T = TypeVar("T")

# Nodes lease from 10.244.1-199: tests write hand-made leases and stale routes at 10.244.200 and up.
DEFAULT_CONFIG: dict[str, Any] = {
    "Network": "10.244.0.0/16",
    "SubnetMax": "10.244.199.0",
    "Backend": {"Type": "vxlan"},
}
DEFAULT_PREFIX = "/coreos.com/network"


def child_launchers(keep: bool = False) -> tuple[list[str], list[str]]:
    """The privilege prefixes (lease service, backend) exactly as flanneld builds them
    (``supervisor.privileges``): the lease service with no capability at all (and uid 0 made
    unspecial), the backend with CAP_NET_ADMIN + CAP_NET_RAW only, both told SIGTERM when their
    parent goes. ``keep``: without that parent-death signal, for a cluster meant to outlive its
    starter (``tools/demo``)."""
    lease, backend = lease_launcher(None), backend_launcher(None)
    if keep:
        lease, backend = (_without_pdeathsig(argv) for argv in (lease, backend))
    return lease, backend


def _without_pdeathsig(argv: list[str]) -> list[str]:
    at = argv.index("--pdeathsig")
    return argv[:at] + argv[at + 2 :]


# --------------------------------------------------------------------------- namespaces


def ns_exec(
    ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns``; raise with its output when it fails and ``check``."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"in netns {ns}: {' '.join(argv)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def ip(ns: str, *args: str, check: bool = True) -> str:
    """``ip <args>`` inside ``ns``; its stdout."""
    return ns_exec(ns, ["ip", *args], check=check).stdout


def ip_json(ns: str, *args: str, tool: str = "ip") -> list[dict[str, Any]]:
    """``ip -j <args>`` (or ``bridge -j <args>``) inside ``ns``, parsed (an empty list when there is nothing)."""
    out = ns_exec(ns, [tool, "-j", *args], check=False)
    text = out.stdout.strip()
    if out.returncode != 0 or not text:
        return []
    return list(json.loads(text))


def list_namespaces(prefix: str = "fpt") -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip().startswith(prefix)]


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process living in ``ns`` (only ever namespaces this harness created)."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_namespaces(names: Sequence[str]) -> None:
    """Kill what runs inside, then delete the namespaces (and every device in them)."""
    for ns in names:
        kill_namespace_processes(ns)
    deadline = time.monotonic() + 5
    for ns in names:
        while (
            subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            ).stdout.strip()
            and time.monotonic() < deadline
        ):
            kill_namespace_processes(ns)
            time.sleep(0.02)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    output: str = ""

    @property
    def lost(self) -> int:
        return self.sent - self.received


def parse_ping(output: str) -> PingResult:
    match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
    if not match:
        return PingResult(0, 0, output)
    return PingResult(int(match.group(1)), int(match.group(2)), output)


def ping(ns: str, to_ip: str, count: int = 5, interval: float = 0.01, timeout: float = 1) -> PingResult:
    """``ping -c count -i interval -W timeout to_ip`` from namespace ``ns``."""
    out = ns_exec(
        ns,
        ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(timeout), to_ip],
        check=False,
        timeout=count * interval + timeout + 30,
    )
    return parse_ping(out.stdout + out.stderr)


class BackgroundPing:
    """A ping running while something else happens; ``result()`` waits for it to finish."""

    def __init__(self, ns: str, to_ip: str, count: int, interval: float = 0.01, timeout: float = 1) -> None:
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ping",
                "-n",
                "-q",
                "-c",
                str(count),
                "-i",
                str(interval),
                "-W",
                str(timeout),
                to_ip,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout: float = 60) -> PingResult:
        out, _ = self.proc.communicate(timeout=timeout)
        return parse_ping(out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextmanager
def pinging_without_loss(ns: str, to_ip: str, count: int, interval: float = 0.01) -> Iterator[BackgroundPing]:
    """``count`` echoes sent from ``ns`` to ``to_ip`` while the block runs: the ping must still be running
    when the block ends, and every echo must have been answered."""
    pinger = BackgroundPing(ns, to_ip, count=count, interval=interval)
    try:
        yield pinger
        still_running = pinger.running()
        result = pinger.result()
    finally:
        pinger.kill()
    assert still_running, "the ping ended before the block did: make it longer"
    assert (result.sent, result.lost) == (count, 0), result.output


_ECHO_SERVER = r"""
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(16)
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    print("peer", peer[0], flush=True)
    with conn:
        conn.settimeout(5)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
"""

_ECHO_CLIENT = r"""
import socket, sys
payload = sys.stdin.buffer.read()
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        got += data
sys.stdout.buffer.write(got)
"""


class EchoServer:
    """A TCP echo server inside a namespace that records each client's address (as it sees it)."""

    def __init__(self, ns: str, host: str, port: int = 7007) -> None:
        self.ns, self.host, self.port = ns, host, port
        self.peers: list[str] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-u", "-c", _ECHO_SERVER, host, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if first != "ready":
            self.stop()
            raise RuntimeError(f"echo server in {ns} did not start: {first}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("peer "):
                self.peers.append(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        close_pipes(self.proc, *([self._reader] if hasattr(self, "_reader") else []))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tcp_echo(from_ns: str, host: str, port: int = 7007, payload: bytes = b"hello flannel\n") -> bytes:
    """Send ``payload`` to an echo server from namespace ``from_ns``; what came back."""
    proc = subprocess.run(
        ["ip", "netns", "exec", from_ns, sys.executable, "-c", _ECHO_CLIENT, host, str(port)],
        input=payload,
        capture_output=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"tcp client in {from_ns} -> {host}:{port} failed: {proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")


def caps(pid: int) -> dict[str, str]:
    """The capability sets (hex strings) and NoNewPrivs of a process, from /proc/<pid>/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {name: found[name].strip() for name in CAP_FIELDS}


# --------------------------------------------------------------------------- the cluster


@dataclass
class Node:
    """One node namespace, its daemons and its pod."""

    index: int
    ns: str
    pod_ns: str
    public_ip: str
    run_dir: Path
    lease: Daemon
    backend: Daemon
    subnet_env: dict[str, str] = field(default_factory=dict)
    flanneld: Daemon | None = None
    """With ``Cluster(flanneld=True)``: the supervisor that runs ``lease`` and ``backend`` itself."""
    cni_config: dict[str, Any] | None = None
    """The CNI network config its pod was added with (``flannel-cni``, kube-flannel's delegate)."""
    pod_added: bool = False
    subnet_file: Path | None = None
    """Where the lease service writes ``subnet.env`` when not in ``run_dir``."""

    @property
    def subnet_env_path(self) -> Path:
        return self.subnet_file or self.run_dir / "subnet.env"

    def runs(self, daemon: Daemon) -> bool:
        """Whether ``daemon`` (or the supervisor that owns it) is running."""
        return self.flanneld.alive() if self.flanneld is not None else daemon.alive()

    def wait_serving(self, daemon: Daemon, socket: Path, what: str, timeout: float) -> None:
        """Wait until ``daemon`` answers SERVING on ``socket``; RuntimeError with the log (flanneld's when it
        owns the daemon) when it exits first or does not answer in time."""
        log = self.flanneld or daemon
        try:
            wait_until(
                lambda: health_status(socket) == "SERVING" or not self.runs(daemon),
                timeout=timeout,
                what=f"{self.name} {what} SERVING",
            )
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.name} {what} log:\n{log.log()[-3000:]}") from None
        if not self.runs(daemon):
            raise RuntimeError(f"{self.name} {what} exited:\n{log.log()[-3000:]}")

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def lease_socket(self) -> Path:
        return self.run_dir / "lease.sock"

    @property
    def backend_socket(self) -> Path:
        return self.run_dir / "backend.sock"

    @property
    def subnet(self) -> str:
        """The node's subnet, e.g. ``10.244.3.0/24``."""
        return _network_of(self.subnet_env["FLANNEL_SUBNET"])

    @property
    def lease_key(self) -> str:
        return self.subnet.replace("/", "-")

    @property
    def gateway_ip(self) -> str:
        return self.subnet_env["FLANNEL_SUBNET"].split("/")[0]

    @property
    def pod_ip(self) -> str:
        return _nth_host(self.subnet, 2)

    @property
    def pod_ipv6(self) -> str:
        """The pod's IPv6 address (dual stack): the second address of the node's IPv6 subnet."""
        network = ipaddress.ip_network(self.subnet_env["FLANNEL_IPV6_SUBNET"], strict=False)
        return str(network.network_address + 2)

    @property
    def mtu(self) -> int:
        return int(self.subnet_env["FLANNEL_MTU"])


def _network_of(cidr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_interface(cidr).network)


def _nth_host(subnet: str, n: int) -> str:
    import ipaddress

    return str(ipaddress.ip_network(subnet)[n])


def read_subnet_env(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@dataclass(frozen=True)
class NodeDaemons:
    """How a node's two daemons run when not as the harness starts them (e.g. containers from the DaemonSet:
    tests/support/podman.py): the two processes, the directory of their sockets, the subnet file."""

    lease: Daemon
    backend: Daemon
    run_dir: Path
    subnet_file: Path


NodeDaemonsFactory = Callable[["Cluster", int, str], NodeDaemons]
"""``(cluster, node index, node namespace) -> NodeDaemons``, called once the node's namespace is wired."""


class Cluster:
    """etcd + N nodes + one pod per node, in namespaces; a context manager that always cleans up.

    ``with Cluster(tmp_path, nodes=3) as c: c.ping(c.nodes[0], c.nodes[1].pod_ip)``
    """

    def __init__(
        self,
        base_dir: Path,
        nodes: int = 3,
        config: dict[str, Any] | None = None,
        *,
        ip_masq: bool = False,
        underlay: str = "192.168.77",
        prefix: str = DEFAULT_PREFIX,
        cluster_id: str | None = None,
        flanneld: bool = False,
        flanneld_args: Sequence[str] = (),
        kube: bool = False,
        backend_args: Sequence[str] = (),
        lease_args: Sequence[str] = (),
        backend_module: str = "backend_service",
        backend_cmd: Sequence[str] | None = None,
        keep: bool = False,
        before_backend: Callable[[Cluster, Node], None] | None = None,
        flanneld_command: Callable[[Cluster, Node], Daemon] | None = None,
        private_wireguard: bool = False,
        profile: profiles.HostProfile = profiles.PLAIN,
        iface_args: Sequence[str] | None = None,
        host_profile: HostProfile | None = None,
        node_daemons: NodeDaemonsFactory | None = None,
        start_timeout: float = 30,
    ) -> None:
        """``profile``: how nodes' NICs are built (:mod:`flannel_testkit.profiles`); ``iface_args``: how the
        lease service (or flanneld) is told the underlay (default ``--iface <underlay NIC>``, none with two
        NICs: the test chooses)."""
        self.id = cluster_id or uuid.uuid4().hex[:6]
        self.base_dir = Path(base_dir)
        self.count = nodes
        self.host_profile = host_profile
        """How unkind the nodes are (flannel_testkit.hostprofiles): rules present before flannel-py starts,
        a restricted PATH for the backend, network config keys."""
        self.config = config if config is not None else DEFAULT_CONFIG
        if host_profile is not None and host_profile.config:
            self.config = {**self.config, **host_profile.config}
        self.ip_masq = ip_masq
        self.underlay = underlay
        self.prefix = prefix
        self.flanneld = flanneld
        self.flanneld_args = list(flanneld_args)
        self.kube = kube
        self.ipv6 = bool(self.config.get("EnableIPv6"))
        self.apiserver: Any = None  # flannel_testkit.kubeapi.KubeApiProcess in kube mode
        self.backend_args = list(backend_args)
        self.backend_module = backend_module
        self.backend_cmd = list(backend_cmd) if backend_cmd else None
        self.lease_args = list(lease_args)
        self.keep = keep
        self.before_backend = before_backend
        self.flanneld_command = flanneld_command
        """With ``flanneld``: builds a node's flanneld from scratch (its own command line and environment)."""
        self.private_wireguard = private_wireguard
        self.profile = profile
        if iface_args is None:
            iface_args = () if profile.two_nics else ("--iface", profile.underlay_ifname)
        self.iface_args = list(iface_args)
        self.node_daemons = node_daemons
        self.start_timeout = start_timeout
        self.ul_ns = f"fpt{self.id}-ul"
        self.etcd_ns = f"fpt{self.id}-etcd"
        self.etcd_ip = f"{underlay}.250"
        self.etcd: EtcdServer | None = None
        self.etcd_http: EtcdHttp | None = None
        self.nodes: list[Node] = []
        self.namespaces: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            self.down()

    def up(self) -> Self:
        """Underlay, etcd with the network config, the nodes' daemons, then one pod per node."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._underlay()
        self._etcd()
        for i in range(1, self.count + 1):
            self._node(i)
        if self.flanneld:
            for node in self.nodes:
                assert node.flanneld is not None
                node.flanneld.start()
        else:
            for node in self.nodes:
                self.start_lease_service(node, wait=False)
        for node in self.nodes:
            self.wait_lease_service(node, self.start_timeout)
        if not self.flanneld:
            for node in self.nodes:
                if self.before_backend is not None:
                    self.before_backend(self, node)
                self.start_backend(node, wait=False)
        for node in self.nodes:
            self.wait_backend(node, self.start_timeout)
        with ThreadPoolExecutor(max_workers=8) as pool:  # CNI ADDs of different pods may run at once
            list(pool.map(self._pod, self.nodes))
        self.wait_converged()
        return self

    def down(self) -> None:
        """Stop every process, delete every namespace; safe to call twice and after a failed ``up``."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            for node in self.nodes:
                pool.submit(self._del_pod, node)  # its failure is dropped: keep cleaning up
        for node in self.nodes:
            for daemon in (node.flanneld, node.backend, node.lease):
                if daemon is None:
                    continue
                with suppress(Exception):  # keep cleaning up
                    daemon.kill()
        if self.apiserver is not None:
            with suppress(Exception):
                self.apiserver.stop()
        if self.etcd is not None:
            with suppress(Exception):
                self.etcd.kill()
        delete_namespaces(list(reversed(self.namespaces)))
        self.namespaces.clear()

    @staticmethod
    def down_by_id(cluster_id: str) -> list[str]:
        """Remove a cluster left running (``keep=True``) by its id: kill and delete its namespaces."""
        names = list_namespaces(f"fpt{cluster_id}-")
        delete_namespaces(names)
        return names

    def _add_ns(self, name: str) -> str:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.namespaces.append(name)
        ip(name, "link", "set", "lo", "up")
        return name

    def _underlay(self) -> None:
        self._add_ns(self.ul_ns)
        ip(self.ul_ns, "link", "add", "br0", "type", "bridge")
        if self.profile.underlay_mtu:
            ip(self.ul_ns, "link", "set", "br0", "mtu", str(self.profile.underlay_mtu))
        ip(self.ul_ns, "link", "set", "br0", "up")

    def _attach(self, ns: str, port: str, addr: str, ifname: str = "eth0") -> None:
        """A veth from the underlay bridge (port ``port``) to ``ifname`` in ``ns`` holding ``addr``."""
        mtu = ["mtu", str(self.profile.underlay_mtu)] if self.profile.underlay_mtu else []
        ip(self.ul_ns, "link", "add", port, *mtu, "type", "veth", "peer", "name", ifname, *mtu, "netns", ns)
        ip(self.ul_ns, "link", "set", port, "master", "br0")
        ip(self.ul_ns, "link", "set", port, "up")
        ip(ns, "addr", "add", addr, "dev", ifname)
        ip(ns, "link", "set", ifname, "up")

    def _etcd(self) -> None:
        self._add_ns(self.etcd_ns)
        self._attach(self.etcd_ns, "etcd", f"{self.etcd_ip}/24")
        data = self.base_dir / "etcd"
        self.etcd = EtcdServer(data / "data", host=self.etcd_ip)
        data.mkdir(parents=True, exist_ok=True)
        etcd = self.etcd
        in_netns(self.etcd_ns, lambda: etcd.start())
        self.etcd_http = EtcdHttp(etcd.endpoint, ns=self.etcd_ns)
        self.put_config(self.config)
        if self.kube:
            self._apiserver()

    def _apiserver(self) -> None:
        """Kube mode: a Kubernetes API for Node objects beside etcd, net-conf.json, one Node per node
        (kubelet-registered, with its podCIDR as the node IPAM controller would give it)."""
        from flannel_testkit.kubeapi import KubeApiControl, KubeApiProcess, make_node

        assert self.etcd is not None
        self.apiserver = KubeApiProcess(
            self.etcd.endpoint,
            "/registry",
            listen=f"{self.etcd_ip}:0",
            wrap=["ip", "netns", "exec", self.etcd_ns],
            log_path=self.base_dir / "apiserver.log",
        ).start()
        (self.base_dir / "net-conf.json").write_text(json.dumps(self.config))
        network = ipaddress.ip_network(self.config["Network"])
        for i in range(1, self.count + 1):
            node = make_node(
                f"n{i}", str(list(network.subnets(new_prefix=24))[i]), addresses=f"{self.underlay}.{i}"
            )
            self.kube_api(partial(KubeApiControl.create_node, node=node))

    def kube_api(self, call: Callable[[KubeApiControl], T]) -> T:
        """Run ``call(control)`` against the Kubernetes API from inside the namespace it listens in."""
        control = self.apiserver.control
        return in_netns(self.etcd_ns, lambda: call(control))

    def store_args(self, i: int) -> list[str]:
        """How node ``i``'s lease service reaches the store: etcd, or the Kubernetes API."""
        assert self.etcd is not None
        if self.kube:
            return [
                "--kube-subnet-mgr",
                "--kube-api-url",
                self.apiserver.url,
                "--node-name",
                f"n{i}",
                "--net-config-path",
                str(self.base_dir / "net-conf.json"),
            ]
        return ["--etcd-endpoints", self.etcd.endpoint, "--etcd-prefix", self.prefix]

    def put_config(self, config: dict[str, Any]) -> None:
        self.etcd_put(f"{self.prefix}/config", json.dumps(config))

    def _node(self, i: int) -> Node:
        ns = self._add_ns(f"fpt{self.id}-n{i}")
        public_ip = f"{self.underlay}.{i}"
        nic = self.profile.underlay_ifname
        if self.profile.two_nics:  # eth0: a management network that leads nowhere, with the default route
            ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
            ip(ns, "addr", "add", f"10.254.{i}.2/24", "dev", "eth0")
            ip(ns, "link", "set", "eth0", "up")
            ip(ns, "link", "set", "eth0peer", "up")
            ip(ns, "route", "add", "default", "via", f"10.254.{i}.1", "dev", "eth0")
            if self.ipv6:
                ip(ns, "-6", "addr", "add", f"fd54::{i:x}:2/64", "dev", "eth0", "nodad")
                ip(ns, "-6", "route", "add", "default", "via", f"fd54::{i:x}:1", "dev", "eth0")
        self._attach(ns, f"n{i}", f"{public_ip}/24", nic)
        ns_exec(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        if self.ipv6:  # dual stack: an IPv6 underlay address too (no duplicate detection to wait for)
            ip(ns, "-6", "addr", "add", f"fd77::{i:x}/64", "dev", nic, "nodad")
            ns_exec(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
        if self.host_profile is not None:
            self.host_profile.prepare_node(ns, self.ipv6)

        run_dir = self.base_dir / f"n{i}"
        run_dir.mkdir(parents=True, exist_ok=True)
        assert self.etcd is not None
        lease_argv = [
            "--run-dir",
            str(run_dir),
            *self.store_args(i),
            *self.iface_args,
            *(["--ip-masq"] if self.ip_masq else []),
            *self.lease_args,
        ]
        backend_argv = [
            "--run-dir",
            str(run_dir),
            *(["--ip-masq"] if self.ip_masq else []),
            *self.backend_args,
        ]
        if self.backend_cmd:  # a third-party backend: its own command line, {run_dir} filled in
            backend_argv = [part.replace("{run_dir}", str(run_dir)) for part in self.backend_cmd]
        wrap = self.wireguard_wrap(run_dir)
        no_caps, net_caps = child_launchers(self.keep)
        node = Node(
            index=i,
            ns=ns,
            pod_ns=f"fpt{self.id}-p{i}",
            public_ip=public_ip,
            run_dir=run_dir,
            lease=Daemon(
                "lease_service",
                lease_argv,
                self.base_dir / f"n{i}-lease.log",
                prefix=["ip", "netns", "exec", ns, *no_caps],
            ),
            backend=Daemon(
                self.backend_module if not self.backend_cmd else "",
                backend_argv,
                self.base_dir / f"n{i}-backend.log",
                prefix=["ip", "netns", "exec", ns, *wrap, *net_caps],
                env=self.host_profile.backend_env(self.base_dir) if self.host_profile else None,
            ),
        )
        if self.node_daemons is not None:
            made = self.node_daemons(self, i, ns)
            node.lease, node.backend, node.run_dir, node.subnet_file = (
                made.lease,
                made.backend,
                made.run_dir,
                made.subnet_file,
            )
        if self.flanneld:
            # the default lease user (nobody) cannot run a venv under /root nor enter pytest's private
            # tmp dirs: unless the test chose a lease user or command, the lease service runs as root (warned)
            chosen = any(a.startswith(("--lease-user", "--lease-cmd")) for a in self.flanneld_args)
            lease_user = [] if chosen else ["--lease-user", "root"]
            node.flanneld = Daemon(
                "supervisor",
                [
                    "--run-dir",
                    str(run_dir),
                    *self.store_args(i),
                    *self.iface_args,
                    *(["--ip-masq"] if self.ip_masq else []),
                    *lease_user,
                    *self.flanneld_args,
                ],
                self.base_dir / f"n{i}-flanneld.log",
                prefix=["ip", "netns", "exec", ns, *wrap],
            )
            if self.flanneld_command is not None:
                node.flanneld = self.flanneld_command(self, node)
        self.nodes.append(node)
        return node

    def wireguard_wrap(self, run_dir: Path) -> list[str]:
        """With ``private_wireguard``: a command prefix giving the node its own /run/wireguard (the UAPI
        sockets of wireguard-go, which every namespace of one machine would otherwise share), as each
        real host has its own. ``ip netns exec`` gives each command a private mount namespace; the bind
        mount of the node's directory there is seen by that command alone, every time the same one."""
        if not self.private_wireguard:
            return []
        uapi = run_dir / "wireguard-uapi"
        uapi.mkdir(mode=0o700, exist_ok=True)
        Path("/run/wireguard").mkdir(mode=0o755, exist_ok=True)  # an empty mount point on the host
        return ["sh", "-c", 'mount --bind "$0" /run/wireguard && exec "$@"', str(uapi)]

    def wg(self, node: Node, *args: str) -> str:
        """``wg ARGS`` on ``node`` (its namespace and its /run/wireguard)."""
        out = subprocess.run(
            ["ip", "netns", "exec", node.ns, *self.wireguard_wrap(node.run_dir), "wg", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"wg {' '.join(args)} on {node.name}: {out.stderr.strip()}")
        return out.stdout

    def _pod(self, node: Node) -> None:
        """Node ``node``'s pod, made through CNI as kubelet would: ``flannel-cni`` ADD inside the node's
        namespace, reading the node's subnet.env and delegating to the real bridge and host-local."""
        node.subnet_env = read_subnet_env(node.subnet_env_path)
        self._add_ns(node.pod_ns)
        if self.ipv6:  # the pod network's own links: no duplicate address detection to wait for
            for ns in (node.ns, node.pod_ns):
                ns_exec(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
        # Without --ip-masq flannel's CNI asks the bridge to masquerade (ipMasq = !FLANNEL_IPMASQ); these
        # clusters test flannel's dataplane unmasqueraded, so their CNI config says ipMasq false.
        node.cni_config = {
            **node_cni_config(node.run_dir, delegate=None if self.ip_masq else {"ipMasq": False}),
            "subnetFile": str(node.subnet_env_path),
        }
        result = cni_call(
            "ADD", node.ns, node.cni_config, container_id=node.pod_ns, netns=f"/run/netns/{node.pod_ns}"
        ).ok()
        node.pod_added = True
        want = [f"{node.pod_ip}/{node.subnet.split('/')[1]}"]
        if "FLANNEL_IPV6_SUBNET" in node.subnet_env:
            want.append(f"{node.pod_ipv6}/{node.subnet_env['FLANNEL_IPV6_SUBNET'].split('/')[1]}")
        if [pod_address(result, 4), *([pod_address(result, 6)] if len(want) == 2 else [])] != want:
            raise RuntimeError(f"{node.name}: CNI gave the pod {result.get('ips')}, expected {want}")

    def _del_pod(self, node: Node) -> None:
        """CNI DEL for the node's pod, as kubelet does when the pod goes."""
        if node.pod_added and node.cni_config is not None:
            cni_call(
                "DEL",
                node.ns,
                node.cni_config,
                container_id=node.pod_ns,
                netns=f"/run/netns/{node.pod_ns}",
                timeout=20,
            ).ok()
            node.pod_added = False

    # ------------------------------------------------------------------ daemons

    def start_lease_service(self, node: Node, wait: bool = True) -> None:
        node.lease.start()
        if wait:
            self.wait_lease_service(node)

    def wait_lease_service(self, node: Node, timeout: float = 90) -> None:
        node.wait_serving(node.lease, node.lease_socket, "lease service", timeout)

    def start_backend(self, node: Node, wait: bool = True) -> None:
        node.backend.start()
        if wait:
            self.wait_backend(node)

    def wait_backend(self, node: Node, timeout: float = 90) -> None:
        node.wait_serving(node.backend, node.backend_socket, "backend", timeout)
        if not node.subnet_env:
            node.subnet_env = read_subnet_env(node.subnet_env_path)

    def restart_backend(self, node: Node, sig: int = signal.SIGKILL, wait: bool = True) -> None:
        node.backend.stop(sig)
        self.start_backend(node, wait=wait)

    def restart_lease_service(self, node: Node, sig: int = signal.SIGKILL, wait: bool = True) -> None:
        node.lease.stop(sig)
        self.start_lease_service(node, wait=wait)

    # ------------------------------------------------------------------ observations and actions

    def node(self, i: int) -> Node:
        """Node ``i`` (1-based, as in the namespace names)."""
        return self.nodes[i - 1]

    def ping(self, src: Node, to_ip: str, count: int = 5, interval: float = 0.01) -> PingResult:
        return ping(src.pod_ns, to_ip, count, interval)

    def kernel_objects(self, node: Node) -> dict[str, Any]:
        return kernel_objects(node.ns)

    def backend_status(self, node: Node) -> Any:
        """``flannel.v1.BackendService/GetStatus`` on the node's backend socket."""
        import grpc

        from proto.flannel.v1 import backend_pb2, backend_pb2_grpc

        with grpc.insecure_channel(f"unix:{node.backend_socket}") as channel:
            stub = backend_pb2_grpc.BackendServiceStub(channel)
            return stub.GetStatus(backend_pb2.GetStatusRequest(), timeout=5)

    def etcd_put(self, key: str | bytes, value: str | bytes, ttl: int = 0) -> None:
        assert self.etcd_http is not None
        self.etcd_http.put(key, value, ttl)

    def etcd_get(self, key: str) -> str | None:
        assert self.etcd_http is not None
        return self.etcd_http.get(key)

    def etcd_delete(self, key: str) -> int:
        assert self.etcd_http is not None
        return self.etcd_http.delete(key)

    def etcd_get_prefix(self, prefix: str) -> dict[str, str]:
        assert self.etcd_http is not None
        return self.etcd_http.get_prefix(prefix)

    def leases(self) -> dict[str, dict[str, Any]]:
        """The leases in etcd: key (``10.244.3.0-24``) to the stored JSON."""
        base = f"{self.prefix}/subnets/"
        return {k[len(base) :]: json.loads(v) for k, v in self.etcd_get_prefix(base).items()}

    def full_mesh_pings(self, count: int = 5) -> dict[tuple[int, int], PingResult]:
        """Every pod pings every other pod: ``{(from, to): result}``."""
        return {
            (a.index, b.index): self.ping(a, b.pod_ip, count)
            for a in self.nodes
            for b in self.nodes
            if a is not b
        }

    def mesh_ok(self, count: int = 3) -> bool:
        return all(r.received == r.sent == count for r in self.full_mesh_pings(count).values())

    def expected_peers(self, node: Node) -> set[str]:
        return {other.subnet for other in self.nodes if other is not node}

    def peer_subnets_routed(self, node: Node) -> set[str]:
        """The destinations of the node's routes, whoever made them (third-party backends too)."""
        return {r["dst"] for r in ip_json(node.ns, "route", "show")}

    def wait_converged(self, timeout: float = 30) -> None:
        """Every node routes to every other node's subnet."""
        for node in self.nodes:
            self._wait_routes(node, self.expected_peers(node), timeout)

    def _wait_routes(self, node: Node, want: set[str], timeout: float) -> None:
        wait_until(
            lambda: want <= self.peer_subnets_routed(node),
            timeout=timeout,
            what=f"{node.name} routes to {sorted(want)}",
        )


_COUNTERS = re.compile(r" \[\d+:\d+\]$")


def flannel_rules(ns: str, tool: str = "iptables-save") -> list[str]:
    """The node's iptables rules and chains that mention FLANNEL (masquerade, forward), counters stripped,
    in order (``tool="ip6tables-save"`` for IPv6)."""
    out = ns_exec(ns, [tool], check=False).stdout
    table, rules = "", []
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif "FLANNEL" in line:
            rules.append(f"{table} {_COUNTERS.sub('', line)}")
    return rules


def kernel_objects(ns: str) -> dict[str, Any]:
    """The flannel-owned kernel objects of a node, normalised for comparison: the VXLAN devices
    (name, MAC, MTU, VNI, local address, addresses), routes with the backend's protocol or on a
    flannel device, permanent neighbours and FDB entries on the flannel devices, masquerade rules."""
    devices = [
        link
        for link in ip_json(ns, "-d", "link", "show", "type", "vxlan")
        if str(link.get("ifname", "")).startswith("flannel")
    ]
    names = sorted(str(d["ifname"]) for d in devices)
    links = []
    for d in devices:
        info = d.get("linkinfo", {}).get("info_data", {})
        addrs = [
            f"{a['local']}/{a['prefixlen']}"
            for entry in ip_json(ns, "addr", "show", "dev", d["ifname"])
            for a in entry.get("addr_info", [])
        ]
        links.append(
            {
                "name": d["ifname"],
                "mac": d.get("address"),
                "mtu": d.get("mtu"),
                "vni": info.get("id"),
                "local": info.get("local"),
                "port": info.get("port"),
                "addrs": sorted(addrs),
            }
        )
    routes: dict[str, dict[str, Any]] = {}
    candidates = ip_json(ns, "route", "show", "proto", str(RTPROT_FLANNEL))
    for name in names:
        candidates += [{**r, "dev": name} for r in ip_json(ns, "route", "show", "dev", name)]
    for r in candidates:
        if r.get("protocol") == "kernel":
            continue
        entry = {
            "dst": r["dst"],
            "gateway": r.get("gateway"),
            "dev": r.get("dev"),
            "flags": sorted(r.get("flags", [])),
            "protocol": str(r.get("protocol")),
        }
        routes[r["dst"]] = entry
    neighbours, fdb = [], []
    for name in names:
        for n in ip_json(ns, "neigh", "show", "dev", name, "nud", "permanent"):
            neighbours.append({"dev": name, "dst": n.get("dst"), "lladdr": n.get("lladdr")})
        for f in ip_json(ns, "fdb", "show", "dev", name, tool="bridge"):
            if "permanent" in f.get("state", "") or f.get("dst"):
                fdb.append(
                    {"dev": name, "mac": f.get("mac"), "dst": f.get("dst"), "state": f.get("state", "")}
                )

    def key(d: dict[str, Any]) -> str:
        return json.dumps(d, sort_keys=True)

    return {
        "links": sorted(links, key=key),
        "routes": sorted(routes.values(), key=key),
        "rules": flannel_rules(ns),
        "neighbours": sorted(neighbours, key=key),
        "fdb": sorted(fdb, key=key),
    }


@contextmanager
def cluster(
    base_dir: Path, nodes: int = 3, config: dict[str, Any] | None = None, **kwargs: Any
) -> Iterator[Cluster]:
    """``with cluster(tmp, 3) as c: ...``: a running cluster, always torn down."""
    c = Cluster(base_dir, nodes, config, **kwargs)
    with c:
        yield c
