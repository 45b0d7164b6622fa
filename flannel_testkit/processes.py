"""Run the project's daemons as real processes for tests, always cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flannel_testkit.wait import wait_until


def health_status(socket_path: Path, service: str = "", timeout: float = 1.0) -> str:
    """The grpc.health.v1 status name of a server on a unix socket, or the error code name."""
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as exc:
        return str(exc.code().name)


def close_pipes(proc: subprocess.Popen[Any], *readers: threading.Thread, timeout: float = 5.0) -> None:
    """After ``proc`` has exited: let the threads that read its pipes see the end, then close the pipes
    (an unclosed pipe is a ResourceWarning, and pytest fails the test that leaked it)."""
    for reader in readers:
        reader.join(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def pid_usage(pid: int) -> tuple[float, float] | None:
    """(peak RSS in MB, CPU seconds) of one live process, from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return hwm / 1024, (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, StopIteration, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), read from /proc/<pid>/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:  # it ended since its parent named it
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def descendant_running(pid: int, word: str) -> int | None:
    """The first descendant of ``pid`` with ``word`` as a whole word of its command line, or None."""
    for child in descendants(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if word.encode() in argv:
            return child
    return None


class Daemon:
    """One daemon process (``python -m <module> ...``, or ``args`` as a whole command line when
    ``module`` is empty) with its log in a file."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        log_path: Path,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.module = module
        self.cwd = cwd
        self.env = dict(env or {})
        """Variables set (over this process's environment) for the daemon, e.g. a restricted PATH."""
        self.args = list(args)
        self.log_path = log_path
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        command = [sys.executable, "-m", self.module, *self.args] if self.module else self.args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *command],
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                cwd=self.cwd,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def wait_serving(self, socket_path: Path, timeout: float = 20.0) -> None:
        """Wait until it answers grpc.health.v1 SERVING on ``socket_path``; fail with its log if it exits first."""
        what = f"{self.module or self.args[0]} SERVING on {socket_path}"
        wait_until(lambda: health_status(socket_path) == "SERVING" or not self.alive(), timeout, what=what)
        assert self.alive(), f"{self.module or self.args[0]} exited:\n{self.log()[-3000:]}"

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.module} did not exit; log:\n{self.log()[-3000:]}")
            time.sleep(0.02)
        return self.proc.returncode


def lone_lease_service(
    run_dir: Path,
    etcd_endpoint: str,
    prefix: str,
    log_path: Path,
    *extra: str,
    public_ip: str = "192.168.50.1",
) -> Daemon:
    """The lease service alone (no backend, no supervisor, in this process's network namespace) on a real
    etcd under ``prefix``, announcing ``public_ip``; ``extra`` flags go last. Not started yet."""
    args = ["--run-dir", str(run_dir), "--etcd-endpoints", etcd_endpoint, "--etcd-prefix", prefix]
    return Daemon("lease_service", [*args, "--public-ip", public_ip, *extra], log_path)
