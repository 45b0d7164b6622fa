"""One-for-one restarts with back-off, liveness by health probes, and giving up on a crash loop."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from flannel_testkit.wait import wait_until
from tests.supervisor.harness import Flanneld, alive


@pytest.mark.parametrize(("killed", "other"), [("backend", "lease"), ("lease", "backend")])
def test_a_killed_child_comes_back_and_the_other_is_untouched(
    flanneld: Callable[..., Flanneld], killed: str, other: str
) -> None:
    shown = {"lease": "lease-service", "backend": "backend"}[killed]  # as flanneld names it
    f = flanneld()
    first = {child: f.wait_pids(child, 1)[0] for child in ("lease", "backend")}
    f.wait_http("/healthz", 200)

    os.kill(first[killed], signal.SIGKILL)
    assert f"{shown}: " in f.wait_http("/healthz", 503)
    f.wait_line(f"{shown} (killed by SIGKILL) exited")
    assert f.wait_pids(killed, 2)[1] != first[killed]
    f.wait_http("/healthz", 200)
    assert f.pids(other) == [first[other]] and alive(first[other])


def test_a_child_that_stops_answering_health_is_restarted(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(backend=["--hang-after", "0.3"])
    [lease] = f.wait_pids("lease", 1)
    [hung] = f.wait_pids("backend", 1)
    f.wait_line("backend health: SERVING -> NO_ANSWER")
    f.wait_line("3 consecutive health probes unanswered")
    f.wait_pids("backend", 2)
    wait_until(lambda: not alive(hung), what="the hung backend gone")
    assert f.pids("lease") == [lease]


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    flanneld: Callable[..., Flanneld],
) -> None:
    f = flanneld(backend=["--hang-after", "0.2", "--ignore-term"], args=["--stop-grace", "0.5"])
    [hung] = f.wait_pids("backend", 1)
    f.wait_line("still running after 0.5s: SIGKILL")
    wait_until(lambda: not alive(hung))
    f.wait_pids("backend", 2)


def test_a_crash_looping_child_makes_flanneld_give_up(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(backend=["--crash-at-start", "7"], args=["--max-restarts", "2", "--restart-window", "60"])
    code = f.wait(timeout=30)
    assert code == 1
    assert len(f.pids("backend")) == 3  # first start + 2 restarts, then give up
    message = "giving up: backend needed more than 2 restarts within 60s"
    assert any(message in line and "last exit status of backend: exit code 7" in line for line in f.errors), (
        f.errors
    )
    assert any(message in line for line in f.lines)
    # the lease service was stopped on the way out, never restarted
    [lease] = f.pids("lease")
    assert [e.what for e in f.events() if e.child == "lease"][-2:] == ["term", "exit"]
    assert not alive(lease)


def test_the_lease_service_crash_looping_is_reported_by_name(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(lease=["--crash-after", "0"], args=["--max-restarts", "1"])
    assert f.wait(timeout=30) == 1
    assert any("giving up: lease-service" in line and "exit code 4" in line for line in f.errors), f.errors
