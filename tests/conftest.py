"""Fixtures shared by every test: a real etcd per test session (per xdist worker) and a fresh one
for tests that stop or kill it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcd import EtcdServer


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd shared by the tests of one worker; give each test its own prefix."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd-shared") / "data")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A real etcd for this test alone: it may be stopped, killed, compacted."""
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def prefix() -> str:
    """A unique etcd prefix, so tests sharing one etcd never see each other's keys."""
    return f"/test-{uuid.uuid4().hex[:12]}/network"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flannel-py conformance kit (tests/conformance)")
    group.addoption("--backend-cmd", default=None,
                    help="a third-party backend's command line, {run_dir} replaced by the node's run dir; "
                         "runs the conformance kit against it instead of the built-in backends")
    group.addoption("--backend-config", default=None,
                    help='the Backend object of the network config for --backend-cmd, e.g. \'{"Type": "mine"}\'')
    group.addoption("--peer-backend-data", default=None,
                    help="JSON backend data for hand-made peer leases (default: by backend type)")
