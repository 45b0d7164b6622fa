"""Flags and FLANNELD_* environment variables → one validated :class:`Settings`.

The flags are the backend's rows of the shared table (``flannel_flags``): flannel's names, defaults and
Go syntax, parsed once here into typed values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import flannel_flags
from flannel_rpc.sockets import BACKEND_SOCKET, LEASE_SOCKET

UsageError = flannel_flags.UsageError
"""A flag or environment variable has a bad value; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything the backend was told, parsed."""

    run_dir: Path
    ip_masq: bool
    nftables: bool
    resync_period: float
    verbosity: int
    metrics_listen: tuple[str, int] | None = None  # (host, port) of /metrics; None: off
    iptables_resync: int = 5
    """Seconds between checks of the masquerade/forward rules (flannel's ``--iptables-resync``)."""
    iptables_forward_rules: bool = True
    """Install the FLANNEL-FWD accept rules (flannel's ``--iptables-forward-rules``, default true)."""
    ip_masq_fully_random_disable: bool = False
    """Never use ``--random-fully`` in masquerade rules (flannel's ``--ip-masq-fully-random-disable``)."""
    ip_blackhole_route: bool = False
    """A blackhole route for this node's own pod subnet (flannel's ``--ip-blackhole-route``)."""
    notices: tuple[str, ...] = ()
    """Logged once at start: unknown FLANNELD_* variables, flags accepted without effect."""

    @property
    def lease_socket(self) -> Path:
        return self.run_dir / LEASE_SOCKET

    @property
    def backend_socket(self) -> Path:
        return self.run_dir / BACKEND_SOCKET


DESCRIPTION = (
    "flannel-py backend: follows the lease service on RUN_DIR/lease.sock and keeps the kernel's VXLAN "
    "device, routes, neighbours, FDB entries and masquerade/forward rules equal to the cluster's leases, on "
    "the external interface the lease service chose (GetNetworkConfig). "
    "Needs CAP_NET_ADMIN (and CAP_NET_RAW for iptables). Serves flannel.v1.BackendService/GetStatus on "
    "RUN_DIR/backend.sock."
)


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and environment into Settings; raises UsageError, or flannel_flags.Done for --help
    and --version."""
    environ = os.environ if environ is None else environ
    got = flannel_flags.parse("backend", argv, environ, prog="flannel-backend", description=DESCRIPTION)
    return Settings(
        run_dir=got["run-dir"],
        ip_masq=got["ip-masq"],
        nftables=got["nftables"],
        resync_period=got["resync-period"],
        verbosity=got["v"],
        metrics_listen=got["metrics-listen"],
        iptables_resync=got["iptables-resync"],
        iptables_forward_rules=got["iptables-forward-rules"],
        ip_masq_fully_random_disable=got["ip-masq-fully-random-disable"],
        ip_blackhole_route=got["ip-blackhole-route"],
        notices=got.notices,
    )
