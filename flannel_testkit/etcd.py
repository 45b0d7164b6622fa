"""A real etcd server (Debian's etcd-server) on loopback with a temporary data dir."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from flannel_testkit.netns import in_netns
from lease_service.etcd import EtcdClient, EtcdSettings

__all__ = [
    "EtcdClient",
    "EtcdHttp",
    "EtcdServer",
    "EtcdTls",
    "etcd_binary",
    "etcd_client",
    "free_port",
    "port_open",
]


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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class EtcdHttp:
    """put/get/delete through etcd's v3 JSON gateway (urllib: no event loop, no client library); with
    ``ns``, from inside that network namespace; with ``prefix``, keys are relative to it."""

    def __init__(self, endpoint: str, *, ns: str | None = None, prefix: str = "") -> None:
        self.endpoint, self.ns, self.prefix = endpoint, ns, prefix

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        def go() -> dict[str, Any]:
            req = urllib.request.Request(
                f"{self.endpoint}{path}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer: dict[str, Any] = json.loads(resp.read() or b"{}")
                return answer

        return go() if self.ns is None else in_netns(self.ns, go)

    def _b64(self, text: str | bytes) -> str:
        return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()

    def _key(self, key: str | bytes) -> str:
        if not self.prefix:
            return self._b64(key)
        return self._b64(self.prefix.encode() + b"/" + (key.encode() if isinstance(key, str) else key))

    def put(self, key: str | bytes, value: str | bytes, ttl: int = 0) -> None:
        body: dict[str, Any] = {"key": self._key(key), "value": self._b64(value)}
        if ttl:
            body["lease"] = self._call("/v3/lease/grant", {"TTL": ttl})["ID"]
        self._call("/v3/kv/put", body)

    def _range(self, prefix: str, **extra: object) -> dict[str, Any]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        end = full[:-1] + chr(ord(full[-1]) + 1)
        return self._call("/v3/kv/range", {"key": self._b64(full), "range_end": self._b64(end), **extra})

    def get_prefix(self, prefix: str) -> dict[str, str]:
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in self._range(prefix).get("kvs", [])
        }

    def count_prefix(self, prefix: str) -> int:
        """How many keys start with ``prefix``."""
        return int(self._range(prefix, count_only=True).get("count", 0))

    def get(self, key: str) -> str | None:
        kvs = self._call("/v3/kv/range", {"key": self._key(key)}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def delete(self, key: str | bytes) -> int:
        return int(self._call("/v3/kv/deleterange", {"key": self._key(key)}).get("deleted", 0))

    def compact(self) -> int:
        """Compact etcd's history up to now; the revision compacted at."""
        self.put("/compaction-marker", "x")
        revision = int(
            self._call("/v3/kv/range", {"key": self._key("/compaction-marker")})["header"]["revision"]
        )
        self._call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision
