"""Flags and ``FLANNELD_*`` environment variables → one frozen :class:`Config`.

The flags are the rows of ``flannel_flags`` that flanneld takes (flannel's, in Go's syntax, and ours).
Every value is parsed here, once, the children's included, so a bad value for a child stops flanneld
before anything starts: a :class:`ConfigError` naming the flag (or the variable) and what was expected.
A child gets only the flags routed to it that the operator gave, so each keeps its own defaults.
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import flannel_flags

DEFAULT_RUN_DIR = Path("/run/flannel")
DEFAULT_HEALTHZ_IP = ipaddress.IPv4Address("0.0.0.0")


ConfigError = flannel_flags.UsageError
"""A flag or environment value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Identity:
    """A uid/gid pair the lease service is dropped to (names resolved at parse time)."""

    uid: int
    gid: int
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class RestartSettings:
    """How children are restarted."""

    max_restarts: int = 5
    """More restarts than this within ``window`` seconds make flanneld give up."""
    window: float = 60.0
    """The sliding window, in seconds, over which restarts are counted."""
    backoff_initial: float = 0.5
    """First delay before a restart, in seconds; doubles on each consecutive restart."""
    backoff_max: float = 30.0
    """Upper bound of the delay before a restart, in seconds."""


@dataclass(frozen=True)
class ProbeSettings:
    """How children are health-checked over grpc.health.v1."""

    interval: float = 1.0
    """Seconds between two probes of one child."""
    timeout: float = 1.0
    """Seconds one probe may take before it counts as unanswered."""
    failures: int = 3
    """Consecutive unanswered probes after which a child that has answered before is restarted."""
    startup_timeout: float = 60.0
    """Seconds a fresh child has to answer its first probe before it is restarted."""


@dataclass(frozen=True)
class Config:
    """Everything flanneld needs, parsed."""

    run_dir: Path = DEFAULT_RUN_DIR
    lease_cmd: tuple[str, ...] = ()
    """Command line of the lease service (without flags); empty means ``python -m lease_service``."""
    backend_cmd: tuple[str, ...] = ()
    """Command line of the backend (without flags); empty means ``python -m backend_service``."""
    lease_identity: Identity | None = None
    healthz_ip: ipaddress.IPv4Address | ipaddress.IPv6Address = DEFAULT_HEALTHZ_IP
    healthz_port: int = 0
    log_format: Literal["text", "json"] = "text"
    stop_grace: float = 10.0
    restart: RestartSettings = field(default_factory=RestartSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    lease_args: tuple[str, ...] = ()
    """Flags for the lease service that the operator gave (``--run-dir`` and the socket group excluded)."""
    backend_args: tuple[str, ...] = ()
    """Flags for the backend that the operator gave (``--run-dir`` excluded)."""
    socket_group: str | None = None
    """Group owning the lease socket (``--socket-group``, else the lease group)."""
    notices: tuple[str, ...] = ()
    """Lines to log once at start: unknown ``FLANNELD_*`` variables, flags accepted without effect."""


DESCRIPTION = (
    "flannel-py's flanneld: runs flannel-lease-service (no capabilities) and flannel-backend "
    "(CAP_NET_ADMIN, CAP_NET_RAW only), restarts them when that can help, and serves /healthz. "
    "It takes flannel's flags; the ones for the lease service or the backend are passed on when given."
)


def _resolve_user(text: str) -> tuple[int, int, str | None]:
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        if text.isdigit():  # a bare uid with no passwd entry is fine (containers)
            return int(text), int(text), None
        raise ConfigError(f"--lease-user: no such user {text!r}") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


DEFAULT_LEASE_USER = "nobody"
DEFAULT_LEASE_UID = 65534


def _default_user() -> tuple[int, int, str | None]:
    """``nobody``, or uid/gid 65534 where no such user is listed (a minimal container)."""
    try:
        entry = pwd.getpwnam(DEFAULT_LEASE_USER)
    except KeyError:
        return DEFAULT_LEASE_UID, DEFAULT_LEASE_UID, None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def _resolve_group(text: str, flag: str) -> tuple[int, str | None]:
    try:
        entry = grp.getgrgid(int(text)) if text.isdigit() else grp.getgrnam(text)
    except KeyError:
        if text.isdigit():
            return int(text), None
        raise ConfigError(f"{flag}: no such group {text!r}") from None
    return entry.gr_gid, entry.gr_name


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Parse flags over environment over defaults.

    Raises :class:`ConfigError` (one line naming the flag or variable) for any bad value, unknown flag
    or unknown user/group, and :class:`flannel_flags.Done` for ``--help`` / ``--version``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = {} if environ is None else environ
    got = flannel_flags.parse("flanneld", argv, environ, prog="flanneld", description=DESCRIPTION)

    # the lease service is never uid 0 unless asked for: no capability is not enough while file
    # ownership still grants root's files
    uid, gid, user = _resolve_user(got["lease-user"]) if got["lease-user"] is not None else _default_user()
    group = None
    if got["lease-group"] is not None:
        gid, group = _resolve_group(got["lease-group"], "--lease-group")
    identity = Identity(uid=uid, gid=gid, user=user, group=group)
    socket_group = got["socket-group"]
    if socket_group is not None:
        _resolve_group(socket_group, "--socket-group")
    elif identity is not None and (identity.gid != 0):
        socket_group = identity.group or str(identity.gid)

    restart = RestartSettings(
        max_restarts=got["max-restarts"],
        window=got["restart-window"],
        backoff_initial=got["restart-backoff-initial"],
        backoff_max=got["restart-backoff-max"],
    )
    if restart.backoff_max < restart.backoff_initial:
        raise ConfigError(
            f"--restart-backoff-max ({restart.backoff_max:g}) must not be below "
            f"--restart-backoff-initial ({restart.backoff_initial:g})"
        )
    probe = ProbeSettings(
        interval=got["probe-interval"],
        timeout=got["probe-timeout"],
        failures=got["probe-failures"],
        startup_timeout=got["startup-timeout"],
    )
    return Config(
        run_dir=got["run-dir"],
        lease_cmd=got["lease-cmd"] or (),
        backend_cmd=got["backend-cmd"] or (),
        lease_identity=identity,
        healthz_ip=got["healthz-ip"],
        healthz_port=got["healthz-port"],
        log_format=got["log-format"],
        stop_grace=got["stop-grace"],
        restart=restart,
        probe=probe,
        lease_args=tuple(got.child_args("lease")),
        backend_args=tuple(got.child_args("backend")),
        socket_group=socket_group,
        notices=got.notices,
    )
