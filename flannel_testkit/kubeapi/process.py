"""The test API server as a child process (``python -m flannel_testkit.kubeapi``), always stopped."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from flannel_testkit.kubeapi.control import KubeApiControl


class KubeApiProcess:
    """``python -m flannel_testkit.kubeapi`` as a child process.

    ``wrap`` prefixes the command line (e.g. ``["ip", "netns", "exec", "ns1"]`` to serve inside a
    network namespace). ``stop()`` ends the child's process group (it runs in its own session).
    """

    def __init__(
        self,
        etcd_endpoint: str,
        prefix: str,
        listen: str = "127.0.0.1:0",
        *,
        wrap: Sequence[str] = (),
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.etcd_endpoint, self.prefix, self.listen = etcd_endpoint, prefix, listen
        self.wrap, self.log_path, self.extra_args = list(wrap), log_path, list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.host, self.port = "", 0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{self.port}"

    @property
    def control(self) -> KubeApiControl:
        return KubeApiControl(self.url)

    def start(self, timeout: float = 20.0) -> Self:
        root = Path(__file__).resolve().parents[2]  # where the package is importable from
        argv = [
            *self.wrap,
            sys.executable,
            "-m",
            "flannel_testkit.kubeapi",
            "--etcd-endpoint",
            self.etcd_endpoint,
            "--prefix",
            self.prefix,
            "--listen",
            self.listen,
            *self.extra_args,
        ]
        stderr: Any = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=stderr, cwd=root, start_new_session=True
            )
        finally:
            if stderr is not None:
                stderr.close()
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        out = b""
        while b"\n" not in out:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                self.stop()
                raise RuntimeError(f"kubeapi did not start within {timeout}s: {out!r}")
            out += chunk
        line = out.split(b"\n", 1)[0].decode()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"kubeapi did not start: {line!r}")
        self.host, _, port = line[len("listening on ") :].rpartition(":")
        self.host = self.host.strip("[]")
        self.port = int(port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(etcd_endpoint: str, prefix: str, **kwargs: Any) -> Iterator[KubeApiProcess]:
    """Start the server as a child process for the ``with`` block."""
    with KubeApiProcess(etcd_endpoint, prefix, **kwargs) as server:
        yield server
