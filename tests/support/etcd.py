"""A real etcd server (Debian's etcd-server) on loopback with a temporary data dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_binary() -> str:
    for candidate in ("etcd", "/usr/bin/etcd"):
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("etcd not found: apt-get install etcd-server")


class EtcdServer:
    """One etcd member. ``stop()``/``start()`` keep the data dir, so a restart keeps the data."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def start(self, timeout: float = 20.0) -> None:
        args = [
            etcd_binary(),
            "--name", "test",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-cluster", f"test=http://{self.host}:{self.peer_port}",
            "--log-level", "error",
        ]
        env = {**os.environ, "ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.client_port), timeout=0.2):
                    pass
                if self._healthy():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become ready: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as resp:
                return b"true" in resp.read()
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
