"""Where the Kubernetes API is and how to prove who we are: a kubeconfig file or the in-cluster config.

Read once at start into a :class:`KubeConnection` (the API server's URL, its CA, a client certificate
and key, a bearer token or a token file, ``insecure-skip-tls-verify``), so that the lease service needs
no Kubernetes client library: importing the official one cost ~46 MB and 1-2 s. What flannel's
client-go reads is read the same way: the current context of the kubeconfig (paths relative to the
file), else the service account of the pod (``KUBERNETES_SERVICE_HOST``/``_PORT``, the token file,
re-read as it rotates, and ``ca.crt``); ``--kube-api-url`` replaces the server and keeps the rest.
Credential plugins (``exec``, ``auth-provider``) are refused by name.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lease_service.netconfig import ConfigError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD = 60.0  # seconds between reads of a token file (projected tokens rotate)


@dataclass(frozen=True)
class KubeConnection:
    """How to reach the API server; every file and secret already read (except a rotating token file)."""

    server: str  # https://host:port or http://host:port, no trailing slash
    ca_pem: str | None = None  # the CA bundle (PEM text); None: the system's
    cert_pem: bytes | None = None  # client certificate (PEM)
    key_pem: bytes | None = None  # its key (PEM)
    token: str | None = None  # a bearer token
    token_file: Path | None = None  # a bearer token read from this file (wins over ``token``)
    username: str | None = None  # basic auth (old kubeconfigs)
    password: str | None = None
    insecure: bool = False  # insecure-skip-tls-verify

    def with_server(self, url: str) -> KubeConnection:
        return KubeConnection(
            url.rstrip("/"),
            self.ca_pem,
            self.cert_pem,
            self.key_pem,
            self.token,
            self.token_file,
            self.username,
            self.password,
            self.insecure,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https server (None for http)."""
        if not self.server.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_pem is not None and self.key_pem is not None:
            # load_cert_chain reads files only: a private directory that lives for the call
            with tempfile.TemporaryDirectory(prefix="flannel-kube-") as tmp:
                cert, key = Path(tmp, "client.crt"), Path(tmp, "client.key")
                for path, data in ((cert, self.cert_pem), (key, self.key_pem)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        out.write(data)
                try:
                    ctx.load_cert_chain(cert, key)
                except (ssl.SSLError, OSError) as exc:
                    raise ConfigError(f"the client certificate and key cannot be used: {exc}") from exc
        return ctx


class BearerToken:
    """The ``Authorization`` header value, re-reading a token file at most once a minute."""

    def __init__(self, conn: KubeConnection) -> None:
        self.conn = conn
        self._value: str | None = None
        self._read_at = 0.0

    def header(self) -> str | None:
        conn = self.conn
        if conn.token_file is not None:
            now = time.monotonic()
            if self._value is None or now - self._read_at > TOKEN_REREAD:
                try:
                    self._value = "Bearer " + conn.token_file.read_text().strip()
                    self._read_at = now
                except OSError:
                    if self._value is None:  # keep the last one while the file is being replaced
                        raise
            return self._value
        if conn.token:
            return "Bearer " + conn.token
        if conn.username is not None:
            pair = f"{conn.username}:{conn.password or ''}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        return None


def in_cluster(environ: Mapping[str, str] | None = None, account: Path = SERVICE_ACCOUNT) -> KubeConnection:
    """The pod's service account, as client-go's InClusterConfig reads it."""
    environ = os.environ if environ is None else environ
    host, port = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
    token_file = account / "token"
    if not token_file.is_file():
        raise ConfigError(f"in-cluster config: the service account token {token_file} is missing")
    ca = _read_text(account / "ca.crt", "in-cluster config: the service account CA")
    host = f"[{host}]" if ":" in host else host
    return KubeConnection(f"https://{host}:{port}", ca_pem=ca, token_file=token_file)


def from_kubeconfig(path: Path) -> KubeConnection:
    """The current context of a kubeconfig file; raises ConfigError naming what is missing or wrong."""
    import yaml  # only for kubeconfig files (~2 MB)

    try:
        doc = yaml.safe_load(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"kubeconfig {path}: cannot read it: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path}: not YAML: {str(exc)[:200]}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path}: not a kubeconfig (a YAML mapping is expected)")
    name = doc.get("current-context")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"kubeconfig {path}: no current-context")
    context = _named(path, doc, "contexts", "context", name)
    cluster = _named(path, doc, "clusters", "cluster", context.get("cluster"))
    user_name = context.get("user")
    user = _named(path, doc, "users", "user", user_name) if user_name else {}
    base = path.parent
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise ConfigError(
            f"kubeconfig {path}: cluster {context.get('cluster')!r} has no http(s) server, got {server!r}"
        )
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise ConfigError(
                f"kubeconfig {path}: user {user_name!r} uses an {plugin} credential plugin, "
                "which flannel-py does not run; use a token, a token file or a client certificate"
            )
    token_file = user.get("tokenFile")
    return KubeConnection(
        server=server.rstrip("/"),
        ca_pem=_pem_text(path, base, cluster, "certificate-authority"),
        cert_pem=_pem(path, base, user, "client-certificate"),
        key_pem=_pem(path, base, user, "client-key"),
        token=_string(path, user, "token"),
        token_file=(base / token_file) if isinstance(token_file, str) and token_file else None,
        username=_string(path, user, "username"),
        password=_string(path, user, "password"),
        insecure=cluster.get("insecure-skip-tls-verify") is True,
    )


def _named(path: Path, doc: dict[str, Any], section: str, field: str, name: object) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field)
            if isinstance(value, dict):
                return value
    raise ConfigError(f"kubeconfig {path}: no {field} named {name!r} in {section}")


def _string(path: Path, section: dict[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"kubeconfig {path}: {key} must be a string")
    return value


def _pem(path: Path, base: Path, section: dict[str, Any], key: str) -> bytes | None:
    """``key-data`` (base64 PEM) or ``key`` (a file, relative to the kubeconfig's directory)."""
    data = section.get(key + "-data")
    if data:
        try:
            raw = base64.b64decode(str(data), validate=True)
        except ValueError as exc:
            raise ConfigError(f"kubeconfig {path}: {key}-data is not base64") from exc
    else:
        file = section.get(key)
        if not file:
            return None
        raw = _read_bytes(base / str(file), f"kubeconfig {path}: {key}")
    return raw


def _pem_text(path: Path, base: Path, section: dict[str, Any], key: str) -> str | None:
    """:func:`_pem` as ASCII text."""
    raw = _pem(path, base, section, key)
    try:
        return None if raw is None else raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"kubeconfig {path}: {key} is not PEM text") from exc


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it: {exc.strerror}") from exc


def _read_text(path: Path, what: str) -> str:
    try:
        return _read_bytes(path, what).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not PEM text") from exc
