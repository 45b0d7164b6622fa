"""SIGTERM and SIGINT stop the backend first, then the lease service."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from flannel_testkit.wait import wait_until
from tests.supervisor.harness import Flanneld, alive


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_ends_the_backend_before_the_lease_service(flanneld: Callable[..., Flanneld], sig: int) -> None:
    f = flanneld()
    [lease] = f.wait_pids("lease", 1)
    [backend] = f.wait_pids("backend", 1)
    f.wait_http("/healthz", 200)

    f.signal(sig)
    assert f.wait() == 0
    order = [(e.child, e.what) for e in f.events() if e.what in ("term", "exit")]
    assert order == [("backend", "term"), ("backend", "exit"), ("lease", "term"), ("lease", "exit")]
    assert not alive(lease) and not alive(backend)
    assert "flanneld stopped (dataplane left as it is)" in f.lines[-1]


def test_stop_while_the_lease_service_is_not_serving_yet(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(lease=["--serve-after", "30"])
    [lease] = f.wait_pids("lease", 1)
    [backend] = f.wait_pids("backend", 1)
    f.signal(signal.SIGTERM)
    assert f.wait() == 0
    assert not alive(lease) and not alive(backend)


def test_children_are_told_to_stop_when_flanneld_dies(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld()
    [lease] = f.wait_pids("lease", 1)
    [backend] = f.wait_pids("backend", 1)
    f.signal(signal.SIGKILL)
    f.wait()
    # setpriv --pdeathsig SIGTERM: no orphaned children keep running unsupervised
    wait_until(lambda: not alive(lease) and not alive(backend), what="both children gone")
    assert {(e.child, e.what) for e in f.events()} >= {("lease", "term"), ("backend", "term")}
