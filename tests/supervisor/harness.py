"""Runs a real ``flanneld`` process with fake children and watches what it does."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from flannel_testkit.processes import close_pipes
from flannel_testkit.wait import wait_until

T = TypeVar("T")

FAKE_CHILD = Path(__file__).with_name("fake_child.py")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_cmd(name: str, sock: str, events: Path, *switches: str) -> str:
    words = [
        sys.executable,
        str(FAKE_CHILD),
        "--name",
        name,
        "--socket",
        sock,
        "--events",
        str(events),
        *switches,
    ]
    return " ".join(words)


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def alive(pid: int) -> bool:
    try:
        state = proc_status(pid)["State"]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return not state.startswith("Z")


@dataclass(frozen=True)
class Event:
    child: str
    what: str
    pid: int
    detail: str


class Flanneld:
    """One flanneld under test; every process it or its children started is killed in :meth:`cleanup`."""

    def __init__(
        self,
        tmp_path: Path,
        lease: Sequence[str] = (),
        backend: Sequence[str] = (),
        args: Sequence[str] = (),
        *,
        lease_cmd: str | None = None,
        real_children: bool = False,
        healthz: bool = True,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        netns: str | None = None,
        lease_user: str | None = "root",
    ) -> None:
        self.netns = netns
        self.tmp = tmp_path
        self.run_dir = tmp_path / "run"
        self.events_file = tmp_path / "events"
        self.port = free_port() if healthz else 0
        self.argv = [
            *prefix,
            sys.executable,
            "-m",
            "supervisor",
            "--run-dir",
            str(self.run_dir),
            *(
                []
                if real_children
                else [
                    "--lease-cmd",
                    lease_cmd or fake_cmd("lease", "lease.sock", self.events_file, *lease),
                    "--backend-cmd",
                    fake_cmd("backend", "backend.sock", self.events_file, *backend),
                ]
            ),
            "--probe-interval",
            "0.1",
            "--probe-timeout",
            "0.5",
            "--probe-failures",
            "3",
            "--restart-backoff-initial",
            "0.1",
            "--restart-backoff-max",
            "0.5",
            "--stop-grace",
            "3",
            "--startup-timeout",
            "20",
            *(["--healthz-ip", "127.0.0.1", "--healthz-port", str(self.port)] if healthz else []),
            # the default lease user (nobody) cannot run this venv's interpreter under /root nor reach
            # pytest's private tmp dirs: tests of the default identity pass lease_user=None
            *(
                []
                if lease_user is None or any(a.startswith("--lease-user") for a in args)
                else ["--lease-user", lease_user]
            ),
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.readers: list[threading.Thread] = []

    def start(self) -> Flanneld:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors))
        ]
        for reader in self.readers:
            reader.start()
        return self

    @staticmethod
    def _read(stream, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            sink.append(raw.decode("utf-8", "replace").rstrip("\n"))

    # --- observation ---------------------------------------------------------------------------

    def events(self) -> list[Event]:
        try:
            text = self.events_file.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            child, what, pid, *rest = line.split(" ", 3)
            out.append(Event(child, what, int(pid), rest[0] if rest else ""))
        return out

    def pids(self, child: str, what: str = "start") -> list[int]:
        return [e.pid for e in self.events() if e.child == child and e.what == what]

    def wait_pids(self, child: str, count: int, what: str = "start", timeout: float = 15) -> list[int]:
        return self._wait(
            lambda: (p := self.pids(child, what)) and len(p) >= count and p,
            timeout,
            f"{count} {what} events of {child}",
        )

    def started(self, child: str) -> list[int]:
        """Pids of ``child`` (``lease-service``, ``backend``) from flanneld's own "started (pid N)" lines."""
        found = (re.search(rf"\[flanneld\] {child} started \(pid (\d+)\)", line) for line in list(self.lines))
        return [int(m.group(1)) for m in found if m]

    def wait_started(self, child: str, count: int, timeout: float = 30) -> list[int]:
        return self._wait(
            lambda: (p := self.started(child)) and len(p) >= count and p,
            timeout,
            f"{count} starts of {child}",
        )

    def wait_line(self, text: str, timeout: float = 15) -> str:
        def find() -> str | None:
            return next((line for line in list(self.lines) if text in line), None)

        return self._wait(find, timeout, f"a line with {text!r}")

    def _wait(self, predicate: Callable[..., T | Literal[False] | None], timeout: float, what: str) -> T:
        """wait_until, with flanneld's latest output in the failure message."""
        try:
            return wait_until(predicate, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nflanneld output (last lines):\n{self.tail(40)}") from None

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.lines[-n:] + self.errors[-5:])

    def http(self, path: str) -> tuple[int, str]:
        if self.netns is not None:  # the healthz port lives in flanneld's network namespace
            from flannel_testkit.netns import in_netns

            netns, self.netns = self.netns, None
            try:
                return in_netns(netns, lambda: self.http(path))
            finally:
                self.netns = netns
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def wait_http(self, path: str, code: int, timeout: float = 15) -> str:
        def check() -> str | None:
            try:
                got, body = self.http(path)
            except OSError:
                return None
            return body or "." if got == code else None

        return self._wait(check, timeout, f"{path} answering {code}")

    def json_lines(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in list(self.lines)]

    # --- control -------------------------------------------------------------------------------

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """flanneld's process, once started."""
        assert self.proc is not None, "flanneld was not started"
        return self.proc

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with _suppress():
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        pids = (
            {e.pid for e in self.events()} | set(self.started("lease-service")) | set(self.started("backend"))
        )
        for pid in pids:
            if alive(pid):
                with _suppress():
                    os.killpg(pid, signal.SIGKILL)
                with _suppress():
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None:  # every writer of its pipes is gone: the readers see the end
            close_pipes(self.proc, *self.readers)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], (ProcessLookupError, PermissionError))


@contextmanager
def flanneld_starter(base: Path) -> Iterator[Callable[..., Flanneld]]:
    """``start(**Flanneld options)``: a started flanneld in its own directory under ``base``; every one
    of them cleaned up when the block ends."""
    started: list[Flanneld] = []

    def start(**kwargs: Any) -> Flanneld:
        instance = Flanneld(base / f"f{len(started)}", **kwargs)
        instance.tmp.mkdir()
        started.append(instance)
        return instance.start()

    try:
        yield start
    finally:
        for instance in started:
            instance.cleanup()
