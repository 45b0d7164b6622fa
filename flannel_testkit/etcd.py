"""A real etcd server (Debian's etcd-server) on loopback with a temporary data dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lease_service.etcd import EtcdClient, EtcdSettings

__all__ = ["EtcdClient", "EtcdServer", "EtcdTls", "etcd_binary", "etcd_client", "free_port", "port_open"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def etcd_client(endpoint: str, call_timeout: float = 30) -> EtcdClient:
    """The lease service's own etcd v3 client on ``endpoint`` (``async with`` it), for tests and benchmarks
    that write or read the store as another node would."""
    return EtcdClient(EtcdSettings(endpoints=(endpoint,), call_timeout=call_timeout))


def etcd_binary() -> str:
    for candidate in ("etcd", "/usr/bin/etcd"):
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("etcd not found: apt-get install etcd-server")


@dataclass(frozen=True)
class EtcdTls:
    """Serve clients over TLS with this certificate; with ``client_ca``, require client certificates
    signed by it (etcd's ``--client-cert-auth``)."""

    cert_file: Path
    key_file: Path
    client_ca: Path | None = None


class EtcdServer:
    """One etcd member. ``stop()``/``start()`` keep the data dir, so a restart keeps the data.

    With ``tls`` it serves clients on https (peers stay on plain http)."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", tls: EtcdTls | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    def start(self, timeout: float = 20.0) -> None:
        args = [
            etcd_binary(),
            "--name",
            "test",
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            f"http://{self.host}:{self.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://{self.host}:{self.peer_port}",
            "--initial-cluster",
            f"test=http://{self.host}:{self.peer_port}",
            "--log-level",
            "error",
        ]
        if self.tls is not None:
            args += ["--cert-file", str(self.tls.cert_file), "--key-file", str(self.tls.key_file)]
            if self.tls.client_ca is not None:
                args += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.client_ca)]
        env = {**os.environ, "ETCD_UNSUPPORTED_ARCH": os.environ.get("ETCD_UNSUPPORTED_ARCH", "")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            if port_open(self.host, self.client_port) and self._healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become ready: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        import urllib.request

        context = None
        if self.tls is not None:
            # Readiness only: the test's own client verifies the server certificate.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if self.tls.client_ca is not None:
                context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1, context=context) as resp:
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
