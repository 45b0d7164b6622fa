"""One flanneld per run dir: a second one exits at once naming the first, and touches nothing of it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.supervisor.harness import Flanneld


def test_a_second_flanneld_on_the_same_run_dir_exits_at_once_naming_the_first(
    flanneld: Callable[..., Flanneld],
) -> None:
    first = flanneld()
    first.wait_http("/healthz", 200)
    sockets = {name: (first.run_dir / name).stat().st_ino for name in ("lease.sock", "backend.sock")}

    second = flanneld(args=["--run-dir", str(first.run_dir)])
    begin = time.monotonic()
    assert second.wait(timeout=20) == 2
    assert any(
        f"--run-dir {first.run_dir} is in use by another flanneld (pid {first.popen.pid})" in line
        for line in second.errors
    ), second.errors
    assert time.monotonic() - begin < 10
    assert second.pids("lease") == [] and second.pids("backend") == []  # it started nothing

    # the first one's sockets are the same files, and it still serves
    assert {name: (first.run_dir / name).stat().st_ino for name in sockets} == sockets
    assert first.http("/healthz")[0] == 200
    assert len(first.pids("lease")) == 1 and len(first.pids("backend")) == 1

    # once the first is gone, the run dir is free again
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    third = flanneld(args=["--run-dir", str(first.run_dir)])
    third.wait_http("/healthz", 200)
