"""The one subprocess runner: output, stdin, exit status, and no process left behind on a timeout or cancel."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from backend_service import command


async def test_output_stdin_and_status() -> None:
    done = await command.run(["sh", "-c", "cat; echo oops >&2; exit 3"], stdin=b"hello\n", timeout=30)
    assert (done.returncode, done.out, done.err) == (3, "hello\n", "oops\n")


async def test_merged_stderr() -> None:
    done = await command.run(["sh", "-c", "echo a; echo b >&2"], timeout=30, merge_stderr=True)
    assert sorted(done.out.split()) == ["a", "b"] and done.stderr == b""


async def test_stdin_is_closed_when_not_given() -> None:
    done = await command.run(["cat"], timeout=30)
    assert done.returncode == 0 and done.out == ""


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


async def test_timeout_kills_and_reaps(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(TimeoutError):
        await command.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=0.5)
    assert _gone(int(pidfile.read_text()))


async def test_cancel_kills_and_reaps(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(command.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], timeout=60))
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(int(pidfile.read_text()))


async def test_missing_binary() -> None:
    with pytest.raises(FileNotFoundError):
        await command.run(["/nonexistent/flannel-py-no-such-binary"], timeout=5)
