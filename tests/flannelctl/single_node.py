"""One flannel node in a network namespace of its own, with everything real inside: etcd on
127.0.0.1, the lease service, the vxlan backend (``eth0``, one end of a veth pair, as the underlay), and
hand-written peer leases in etcd. The host reaches the daemons through their unix sockets
(pathname sockets ignore network namespaces); kernel state is read inside the namespace.

The namespace is ``fpc-<8 hex>``; ``down()`` kills what runs in it and deletes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from flannel_testkit.cluster import delete_namespaces, ip
from flannel_testkit.etcd import EtcdHttp, EtcdServer
from flannel_testkit.netns import in_netns
from flannel_testkit.processes import Daemon

CONFIG: dict[str, Any] = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
PREFIX = "/coreos.com/network"
PUBLIC_IP = "192.168.77.1"


def require_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for tool in ("ip", "bridge", "etcd"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


def peer_value(public_ip: str, mac: str, vni: int = 1) -> str:
    """A vxlan peer's lease value, as flannel writes it."""
    return json.dumps(
        {"PublicIP": public_ip, "BackendType": "vxlan", "BackendData": {"VNI": vni, "VtepMAC": mac}}
    )


class SingleNode:
    """etcd + lease service + backend in namespace ``fpc-<id>``; ``run_dir`` holds the sockets."""

    def __init__(
        self, base_dir: Path, *, lease_args: tuple[str, ...] = (), backend_args: tuple[str, ...] = ()
    ) -> None:
        self.ns = f"fpc-{uuid.uuid4().hex[:8]}"
        self.base_dir = base_dir
        self.run_dir = base_dir / "run"
        self.lease_args = lease_args
        self.backend_args = backend_args
        self.etcd: EtcdServer | None = None
        self.etcd_http: EtcdHttp | None = None
        self.lease: Daemon | None = None
        self.backend: Daemon | None = None
        self._made_ns = False

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def up(self, peers: dict[str, str] | None = None) -> SingleNode:
        """Namespace, underlay, etcd with the config and ``peers`` (key → value), both daemons serving."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        self._made_ns = True
        ip(self.ns, "link", "set", "lo", "up")
        ip(self.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
        ip(self.ns, "addr", "add", f"{PUBLIC_IP}/24", "dev", "eth0")
        ip(self.ns, "link", "set", "eth0-peer", "up")
        ip(self.ns, "link", "set", "eth0", "up")
        etcd = EtcdServer(self.base_dir / "etcd" / "data")
        (self.base_dir / "etcd").mkdir(parents=True, exist_ok=True)
        self.etcd = etcd
        in_netns(self.ns, lambda: etcd.start())
        self.etcd_http = EtcdHttp(etcd.endpoint, ns=self.ns)
        self.etcd_http.put(f"{PREFIX}/config", json.dumps(CONFIG))
        for key, value in (peers or {}).items():
            self.put_lease(key, value)
        self.lease = Daemon(
            "lease_service",
            [
                "--run-dir",
                str(self.run_dir),
                "--etcd-endpoints",
                etcd.endpoint,
                "--iface",
                "eth0",
                "--etcd-call-timeout",
                "1",
                *self.lease_args,
            ],
            self.base_dir / "lease.log",
            prefix=self.exec_prefix,
        ).start()
        self.lease.wait_serving(self.run_dir / "lease.sock", timeout=30)
        self.backend = Daemon(
            "backend_service",
            ["--run-dir", str(self.run_dir), "--resync-period", "600", *self.backend_args],
            self.base_dir / "backend.log",
            prefix=self.exec_prefix,
        ).start()
        self.backend.wait_serving(self.run_dir / "backend.sock", timeout=30)
        return self

    def put_lease(self, key: str, value: str) -> None:
        assert self.etcd_http is not None
        self.etcd_http.put(f"{PREFIX}/subnets/{key}", value)

    def delete_lease(self, key: str) -> None:
        assert self.etcd_http is not None
        self.etcd_http.delete(f"{PREFIX}/subnets/{key}")

    def leases_in_etcd(self) -> dict[str, str]:
        assert self.etcd_http is not None
        prefix = f"{PREFIX}/subnets/"
        return {key[len(prefix) :]: value for key, value in self.etcd_http.get_prefix(prefix).items()}

    def run(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the namespace."""
        return subprocess.run(
            [*self.exec_prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    def ip(self, *args: str) -> str:
        return ip(self.ns, *args)

    def logs(self) -> str:
        return "\n".join(
            f"----- {d.module} -----\n{d.log()[-4000:]}" for d in (self.lease, self.backend) if d
        )

    def down(self) -> None:
        for daemon in (self.backend, self.lease):
            if daemon is not None:
                with suppress(Exception):
                    daemon.kill()
        if self.etcd is not None:
            with suppress(Exception):
                self.etcd.kill()
        if self._made_ns:
            delete_namespaces([self.ns])
