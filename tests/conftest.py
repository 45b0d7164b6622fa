"""Fixtures shared by every test: a real etcd per test session (per xdist worker) and a fresh one
for tests that stop or kill it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.netns import sweep_leftovers


def pytest_sessionstart(session: pytest.Session) -> None:
    """Namespaces left by an earlier run that was killed before its clean-up (over an hour old, nothing
    running in them) are deleted once, by the controlling process, and named."""
    if hasattr(session.config, "workerinput"):
        return
    swept = sweep_leftovers()
    if swept:
        print(f"\ndeleted {len(swept)} namespace(s) left by an earlier run: {' '.join(swept)}")


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd shared by the tests of one worker; give each test its own prefix."""
    with EtcdServer(tmp_path_factory.mktemp("etcd-shared") / "data") as server:
        yield server


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A real etcd for this test alone: it may be stopped, killed, compacted."""
    with EtcdServer(tmp_path / "etcd") as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A unique etcd prefix, so tests sharing one etcd never see each other's keys."""
    return f"/test-{uuid.uuid4().hex[:12]}/network"
