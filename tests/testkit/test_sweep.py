"""The sweep of namespaces left by a killed run deletes only old, empty namespaces of its prefixes."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from flannel_testkit.netns import create_netns, delete_netns, sweep_leftovers
from flannel_testkit.wait import wait_until


def _pids(name: str) -> str:
    return subprocess.run(
        ["ip", "netns", "pids", name], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_sweep_deletes_empty_leftovers_and_spares_busy_and_young_ones() -> None:
    prefix = f"fsw{uuid.uuid4().hex[:4]}"  # this test's own: a sweep never reaches another run's
    empty, busy = create_netns(f"{prefix}-empty"), create_netns(f"{prefix}-busy")
    sleeper = subprocess.Popen([*busy.exec_prefix, "sleep", "60"])
    try:
        wait_until(lambda: _pids(busy.name), what="the sleep inside")
        assert sweep_leftovers((prefix,)) == []  # both younger than an hour
        assert sweep_leftovers((prefix,), older_than=0) == [empty.name]
        assert not Path(f"/var/run/netns/{empty.name}").exists()
        assert Path(f"/var/run/netns/{busy.name}").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        delete_netns(empty)
        delete_netns(busy)
