"""flanneld starts its children before it loads asyncio and the supervision, then takes them over: their
output, exit status and signals go through the pipes and the pidfd as for any later incarnation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from supervisor import spawn
from supervisor.child import adopt

PROBE = """
import sys
import supervisor.__main__
print(" ".join(sorted(m for m in ("asyncio", "supervisor.daemon", "supervisor.child") if m in sys.modules)))
"""


def test_what_flanneld_loads_before_it_starts_its_children_leaves_out_asyncio() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_a_child_started_before_the_loop_is_taken_over_with_its_output_and_exit_code() -> None:
    script = "import os, sys; print('out', os.getsid(0) == os.getpid(), flush=True); print('err', file=sys.stderr); sys.exit(3)"
    started = spawn.start((sys.executable, "-c", script), {"PATH": os.environ["PATH"]})

    async def take_over() -> tuple[bytes, bytes, int]:
        process = await adopt(started)
        assert process.stdout is not None and process.stderr is not None
        out, err = await asyncio.gather(process.stdout.read(), process.stderr.read())
        code = await asyncio.wait_for(process.wait(), 30)
        return out, err, code

    assert asyncio.run(take_over()) == (b"out True\n", b"err\n", 3)


def test_signals_reach_a_taken_over_child_until_it_has_exited() -> None:
    started = spawn.start((sys.executable, "-c", "import time; time.sleep(60)"), {})

    async def stop() -> tuple[int, bool]:
        process = await adopt(started)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return code, True
        return code, False

    assert asyncio.run(stop()) == (-signal.SIGTERM, True)


def test_a_child_never_taken_over_is_killed_and_reaped() -> None:
    started = spawn.start((sys.executable, "-c", "import time; time.sleep(60)"), {})
    started.abandon()
    try:
        os.kill(started.pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError(f"pid {started.pid} still exists after abandon")
