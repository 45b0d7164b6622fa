"""Flags and FLANNELD_* environment variables → one validated :class:`Settings`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path


class UsageError(ValueError):
    """A flag or environment variable has a bad value; the message names it."""


@dataclass(frozen=True)
class Settings:
    run_dir: Path
    iface: str | None
    public_ip: IPv4Address | None
    public_ipv6: IPv6Address | None
    ip_masq: bool
    nftables: bool
    resync_period: float
    verbosity: int
    metrics_listen: tuple[str, int] | None = None  # (host, port) of /metrics; None: off

    @property
    def lease_socket(self) -> Path:
        return self.run_dir / "lease.sock"

    @property
    def backend_socket(self) -> Path:
        return self.run_dir / "backend.sock"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flannel-backend",
        description=(
            "flannel-py backend: follows the lease service on RUN_DIR/lease.sock and keeps the kernel's "
            "VXLAN device, routes, neighbours, FDB entries (and, with --ip-masq, masquerade rules) equal to "
            "the cluster's leases. Needs CAP_NET_ADMIN (and CAP_NET_RAW for iptables). Serves "
            "flannel.v1.BackendService/GetStatus on RUN_DIR/backend.sock. Every flag can also be set as "
            "FLANNELD_<FLAG> in the environment; flags win."
        ),
    )
    add = p.add_argument
    add("--run-dir", default="/run/flannel", help="holds lease.sock and backend.sock (default %(default)s)")
    add("--iface", default=None, help="underlay interface (default: the default route's)")
    add("--public-ip", default=None, help="IPv4 address to use as the VXLAN local address (default: the interface's)")
    add("--public-ipv6", default=None, help="IPv6 address to use as the VXLAN local address")
    add("--ip-masq", action="store_true", help="install flannel's masquerade and forward rules")
    add("--nftables", action="store_true", help="use nftables (nft -f) instead of iptables-restore for --ip-masq")
    add("--resync-period", type=float, default=30.0, help="seconds between full reconciles and rule checks (default %(default)s)")
    add("--metrics-listen", default=None, help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default)")
    add("-v", "--verbose", action="count", default=0, help="more logging")
    return p


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {arg.split("=", 1)[0] for arg in argv}

    def env(flag: str, value: object) -> object:
        name = "FLANNELD_" + flag[2:].upper().replace("-", "_")
        if flag in given or name not in environ:
            return value
        raw = environ[name]
        if isinstance(value, bool):
            if raw.lower() not in ("1", "true", "yes", "0", "false", "no", ""):
                raise UsageError(f"{name}={raw!r}: expected true or false")
            return raw.lower() in ("1", "true", "yes")
        return raw

    iface = env("--iface", args.iface)
    if isinstance(iface, str) and "," in iface:
        iface = iface.split(",")[0]  # flannel allows several; the first is the one we use
    public_ip = env("--public-ip", args.public_ip)
    public_ipv6 = env("--public-ipv6", args.public_ipv6)
    try:
        ip4 = IPv4Address(public_ip) if public_ip else None
    except ValueError:
        raise UsageError(f"--public-ip {public_ip!r} is not an IPv4 address") from None
    try:
        ip6 = IPv6Address(public_ipv6) if public_ipv6 else None
    except ValueError:
        raise UsageError(f"--public-ipv6 {public_ipv6!r} is not an IPv6 address") from None
    if args.resync_period <= 0:
        raise UsageError(f"--resync-period {args.resync_period} must be positive")
    return Settings(
        run_dir=Path(str(env("--run-dir", args.run_dir))),
        iface=iface or None,  # type: ignore[arg-type]
        public_ip=ip4,
        public_ipv6=ip6,
        ip_masq=bool(env("--ip-masq", args.ip_masq)),
        nftables=bool(env("--nftables", args.nftables)),
        resync_period=args.resync_period,
        verbosity=args.verbose,
        metrics_listen=_host_port("--metrics-listen", env("--metrics-listen", args.metrics_listen)),  # type: ignore[arg-type]
    )


def _host_port(flag: str, value: str | None) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port); None when not given."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{flag} {value!r} must be HOST:PORT, e.g. 127.0.0.1:9102")
    return host.strip("[]"), int(port)
