"""Fixtures for the end-to-end dataplane tests: namespace clusters running the real daemons."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flannel_testkit.cluster import Cluster
from flannel_testkit.leasestream import Stream


def require_root_and(*tools: str, why: str = "network namespaces") -> None:
    """Skip the test unless it runs as root (for ``why``) with every one of ``tools`` on PATH."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root for {why}")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (tools/bootstrap installs it)")


def _require_namespaces() -> None:
    require_root_and("ip", "setpriv", "ping", "etcd")


def _print_logs(cluster: Cluster) -> None:
    """Shown by pytest only when the test failed: the tail of every daemon's log."""
    for node in cluster.nodes:
        for daemon in (node.lease, node.backend):
            print(f"----- {node.name} {daemon.module} ({daemon.log_path}) -----")
            print(daemon.log()[-4000:])


@pytest.fixture(scope="module")
def vxlan_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes, vxlan, --ip-masq, shared by the tests of a module that leave it as they found it."""
    _require_namespaces()
    cluster = Cluster(tmp_path_factory.mktemp("vxlan-cluster"), nodes=3, ip_masq=True)
    try:
        cluster.up()
        yield cluster
    finally:
        _print_logs(cluster)
        cluster.down()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """A factory for clusters owned by one test (for tests that break things), all torn down after it."""
    _require_namespaces()
    made: list[Cluster] = []

    def make(nodes: int = 3, config: dict[str, Any] | None = None, **kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(made)}", nodes, config, **kwargs)
        made.append(cluster)
        cluster.up()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            _print_logs(cluster)
            cluster.down()


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    """WatchLeases streams a test opens; closed at teardown."""
    made: list[Stream] = []
    yield made
    for stream in made:
        stream.close()
