from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.netns import Netns, in_netns, netns, unique_name
from tests.supervisor.harness import Flanneld, flanneld_starter


@pytest.fixture
def flanneld(tmp_path: Path) -> Iterator[Callable[..., Flanneld]]:
    """Start a flanneld with fake children: ``flanneld(lease=[switches], backend=[switches], args=[...])``."""
    with flanneld_starter(tmp_path) as start:
        yield start


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="fpt-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@dataclass
class EtcdNode:
    """A throw-away network namespace with its own etcd on loopback and an ``eth0`` (a veth with an
    address and a default route), where flanneld runs the real children."""

    ns: Netns
    etcd: EtcdServer
    prefix: str = "/coreos.com/network"

    def put_config(self, config: dict[str, object]) -> None:
        self.ns.run(
            ["etcdctl", "--endpoints", self.etcd.endpoint, "put", f"{self.prefix}/config", json.dumps(config)]
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[EtcdNode]:
    with netns(unique_name("fpt")) as ns:
        ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        ns.ip("link", "set", "eth0p", "up")
        ns.ip("addr", "add", "10.77.0.1/24", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("route", "add", "default", "via", "10.77.0.254")
        etcd = EtcdServer(tmp_path / "etcd")
        in_netns(ns.name, etcd.start)  # etcd and its readiness check live in the namespace
        try:
            yield EtcdNode(ns, etcd)
        finally:
            etcd.kill()
