"""The backend starts only once the lease service answers SERVING; healthz follows every phase."""

from __future__ import annotations

import signal
from collections.abc import Callable

from tests.supervisor.harness import Flanneld
from flannel_testkit.wait import wait_until


def test_backend_waits_for_the_lease_service_to_serve(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(lease=["--serve-after", "1.5"])
    f.wait_pids("lease", 1)
    # lease process up but not SERVING yet: no backend, not healthy, but alive
    assert "backend: WAITING" in f.wait_http("/healthz", 503)
    assert f.http("/readyz")[0] == 503
    assert f.http("/livez")[0] == 200
    assert f.pids("backend") == []

    f.wait_pids("backend", 1)
    kinds = [(e.child, e.what) for e in f.events()]
    assert kinds.index(("lease", "serving")) < kinds.index(("backend", "start"))
    assert f.wait_http("/healthz", 200) == "lease-service: SERVING\nbackend: SERVING\n"
    assert f.http("/readyz")[0] == 200

    f.signal(signal.SIGTERM)
    assert f.wait() == 0


def test_healthz_is_503_while_the_backend_is_not_serving(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(backend=["--serve-after", "1.5"])
    f.wait_pids("backend", 1)
    f.wait_line("backend health: STARTING -> NOT_SERVING")
    assert f.http("/healthz") == (503, "lease-service: SERVING\nbackend: NOT_SERVING\n")
    assert f.http("/livez")[0] == 200
    f.wait_http("/healthz", 200)


def test_healthz_is_disabled_by_default(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(healthz=False)
    f.wait_pids("backend", 1)
    wait_until(lambda: any("backend health: STARTING -> SERVING" in line for line in f.lines))
    assert not any("healthz listening" in line for line in f.lines)
