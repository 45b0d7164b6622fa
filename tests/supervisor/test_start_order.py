"""Both children start at once; healthz follows every phase and says 200 as soon as both serve."""

from __future__ import annotations

import signal
import time
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


def test_healthz_says_200_within_200_ms_of_both_children_serving(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(lease=["--serve-after", "1.0"], backend=["--serve-after", "1.2"])
    first_200 = None
    deadline = time.monotonic() + 20
    while first_200 is None and time.monotonic() < deadline:
        try:
            code, _ = f.http("/healthz")
        except OSError:
            code = 0
        if code == 200:
            first_200 = time.time()
        else:
            time.sleep(0.01)
    assert first_200 is not None, f.tail()
    served = [float(e.detail) for e in f.events() if e.what == "serving"]
    assert len(served) == 2
    lag = first_200 - max(served)
    assert lag <= 0.2, f"/healthz said 200 {lag:.3f}s after both children served"


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
