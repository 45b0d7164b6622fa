"""Both children start at once; healthz follows every phase and says 200 as soon as both serve."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from flannel_testkit.wait import wait_until
from tests.supervisor.harness import Flanneld


def test_both_children_start_at_once_and_healthz_waits_for_both(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(lease=["--serve-after", "1.5"])
    # the backend does not wait for the lease service to serve: the contract orders them, not flanneld
    f.wait_pids("lease", 1)
    f.wait_pids("backend", 1)
    assert "lease-service: " in f.wait_http("/healthz", 503)
    assert f.http("/readyz")[0] == 503
    assert f.http("/livez")[0] == 200
    assert f.wait_http("/healthz", 200) == "lease-service: SERVING\nbackend: SERVING\n"
    assert f.http("/readyz")[0] == 200

    f.signal(signal.SIGTERM)
    assert f.wait() == 0


def test_healthz_follows_a_child_turning_serving_without_waiting_for_the_probe_interval(
    flanneld: Callable[..., Flanneld],
) -> None:
    # until a child first answers SERVING it is probed every STARTUP_PROBE_INTERVAL (0.1 s), whatever
    # --probe-interval says: with an interval of 10 minutes, /healthz turns 200 only if that holds
    f = flanneld(backend=["--serve-on-signal"], args=["--probe-interval", "600"])
    f.wait_line("backend health: STARTING -> NOT_SERVING")
    f.wait_line("lease-service health: STARTING -> SERVING")
    assert f.http("/healthz") == (503, "lease-service: SERVING\nbackend: NOT_SERVING\n")
    os.kill(f.wait_pids("backend", 1)[0], signal.SIGUSR1)
    # a deadline sized for a loaded machine, far below the probe interval (no timing assertion)
    assert f.wait_http("/healthz", 200, timeout=60) == "lease-service: SERVING\nbackend: SERVING\n"
    served = [float(e.detail) for e in f.events() if e.what == "serving"]
    assert len(served) == 2


def test_healthz_is_503_while_the_backend_is_not_serving(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(backend=["--serve-after", "1.5"])
    f.wait_pids("backend", 1)
    f.wait_line("backend health: STARTING -> NOT_SERVING")
    f.wait_line("lease-service health: STARTING -> SERVING")
    assert f.http("/healthz") == (503, "lease-service: SERVING\nbackend: NOT_SERVING\n")
    assert f.http("/livez")[0] == 200
    f.wait_http("/healthz", 200)


def test_healthz_is_disabled_by_default(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(healthz=False)
    f.wait_pids("backend", 1)
    wait_until(lambda: any("backend health: STARTING -> SERVING" in line for line in f.lines))
    assert not any("healthz listening" in line for line in f.lines)
