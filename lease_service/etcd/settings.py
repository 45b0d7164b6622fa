"""How to reach etcd: endpoints, TLS files, credentials, deadlines and back-off."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Endpoint:
    """One parsed etcd endpoint: ``url`` as given, ``target`` as ``host:port`` for gRPC."""

    url: str
    target: str
    secure: bool


def parse_endpoint(url: str) -> Endpoint:
    """Parse ``http://host:port`` or ``https://host:port`` (flanneld's ``--etcd-endpoints`` items)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"etcd endpoint {url!r}: expected http://host:port or https://host:port")
    if not parts.hostname:
        raise ValueError(f"etcd endpoint {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"etcd endpoint {url!r}: expected no path, query or fragment")
    try:
        port = parts.port or 2379
    except ValueError as exc:
        raise ValueError(f"etcd endpoint {url!r}: bad port") from exc
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return Endpoint(url=url.strip(), target=f"{host}:{port}", secure=parts.scheme == "https")


@dataclass(frozen=True)
class EtcdSettings:
    """Connection settings of :class:`~lease_service.etcd.EtcdClient`."""

    #: ``http://`` or ``https://`` URLs; with several, calls go to the first that works and stay there.
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    #: CA bundle that signed the etcd server certificates (https endpoints; None = system roots).
    ca_file: Path | None = None
    #: Client certificate and key for etcd's ``--client-cert-auth`` (both or neither).
    cert_file: Path | None = None
    key_file: Path | None = None
    #: etcd user and password: the client authenticates and sends the token with every call.
    username: str | None = None
    password: str | None = None
    #: Deadline of one attempt of one call, in seconds.
    call_timeout: float = 5.0
    #: Reconnect back-off: first delay and cap, in seconds; each delay is jittered.
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    #: Overall deadline of a unary call with all its retries; None means 3 x call_timeout.
    retry_budget: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            raise TypeError(f"etcd endpoints {self.endpoints!r}: expected a tuple of URLs, got a string")
        if not self.endpoints:
            raise ValueError("etcd endpoints: expected at least one URL")
        for url in self.endpoints:
            parse_endpoint(url)
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                f"etcd client certificate: cert_file={self.cert_file} key_file={self.key_file}: give both or neither"
            )
        if (self.username is None) != (self.password is None):
            raise ValueError("etcd credentials: give both username and password, or neither")
        if self.call_timeout <= 0:
            raise ValueError(f"etcd call_timeout={self.call_timeout}: expected > 0")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError(
                f"etcd back-off initial={self.backoff_initial} max={self.backoff_max}: expected 0 < initial <= max"
            )
        if self.retry_budget is not None and self.retry_budget <= 0:
            raise ValueError(f"etcd retry_budget={self.retry_budget}: expected > 0")

    @property
    def budget(self) -> float:
        """Overall deadline of one unary call including retries, in seconds."""
        return self.retry_budget if self.retry_budget is not None else 3 * self.call_timeout

    @property
    def parsed_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(parse_endpoint(url) for url in self.endpoints)
