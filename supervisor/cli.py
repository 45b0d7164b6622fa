"""Flags and ``FLANNELD_*`` environment variables → one frozen :class:`Config`.

Every flag ``--some-flag`` can also be given as ``FLANNELD_SOME_FLAG``; a flag on the command line
wins over the environment, the environment over the default. Values are parsed here, once, and a bad
one is a :class:`ConfigError` naming the flag (or the variable) and what was expected.

Flags that belong to a child are kept as "unset" (``None``) unless the operator gave them, and only the
ones that were given are passed on, so each child keeps its own defaults.
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import pwd
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "FLANNELD_"

DEFAULT_RUN_DIR = Path("/run/flannel")
DEFAULT_HEALTHZ_IP = ipaddress.IPv4Address("0.0.0.0")


class ConfigError(ValueError):
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


# --- value parsers: each raises argparse.ArgumentTypeError with what was expected ------------------


def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _seconds(text: str) -> float:
    """Seconds as a number, or Go-style ``500ms``/``10s``/``2m``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected a duration in seconds (e.g. 10, 0.5, 500ms, 2m), got {text!r}"
        )
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration greater than zero, got {text!r}")
    return value


_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off", ""}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IPv4 address, got {text!r}") from None


def _ipv6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IPv6 address, got {text!r}") from None


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address, got {text!r}") from None


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"expected a regular expression, got {text!r}: {exc}") from None
    return text


def _command(text: str) -> str:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a command line, got {text!r}: {exc}") from None
    if not words:
        raise argparse.ArgumentTypeError("expected a command line, got an empty one")
    return text


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value")
    return text


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise argparse.ArgumentTypeError(f"expected 'text' or 'json', got {text!r}")
    return text


# --- the option table ---------------------------------------------------------------------------

Target = Literal["lease", "backend", "both", "self"]


@dataclass(frozen=True)
class _Opt:
    flag: str
    parse: Callable[[str], Any]
    help: str
    target: Target
    kind: Literal["value", "bool", "list", "level", "explicit-bool"] = "value"
    """``bool``: passed as a bare flag when true; ``explicit-bool``: passed as ``--flag=true|false``;
    ``level``: an integer passed as that many ``-v``; ``list``: repeatable."""
    default: Any = None
    metavar: str | None = None
    env_split: bool = False
    """For a list flag: split its environment value on commas."""
    child_flag: str | None = None
    """The child's name for the flag, when it differs from flanneld's."""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


_OPTIONS: tuple[_Opt, ...] = (
    # lease service (the store)
    _Opt(
        "--etcd-endpoints",
        _nonempty,
        "comma-separated etcd endpoints (lease service default: http://127.0.0.1:4001,http://127.0.0.1:2379)",
        "lease",
        metavar="URLS",
    ),
    _Opt(
        "--etcd-prefix",
        _nonempty,
        "etcd prefix (lease service default: /coreos.com/network)",
        "lease",
        metavar="PREFIX",
    ),
    _Opt(
        "--etcd-cafile",
        _nonempty,
        "SSL certificate authority file used to secure etcd communication",
        "lease",
        metavar="FILE",
    ),
    _Opt(
        "--etcd-certfile",
        _nonempty,
        "SSL certificate file used to secure etcd communication",
        "lease",
        metavar="FILE",
    ),
    _Opt(
        "--etcd-keyfile", _nonempty, "SSL key file used to secure etcd communication", "lease", metavar="FILE"
    ),
    _Opt("--etcd-username", _nonempty, "username for BasicAuth to etcd", "lease", metavar="USER"),
    _Opt("--etcd-password", _nonempty, "password for BasicAuth to etcd", "lease", metavar="PASSWORD"),
    _Opt(
        "--kube-subnet-mgr",
        _bool,
        "use the Kubernetes API (Node objects) instead of etcd",
        "lease",
        kind="bool",
    ),
    _Opt(
        "--kubeconfig-file",
        _nonempty,
        "kubeconfig file (default: in-cluster config)",
        "lease",
        metavar="FILE",
    ),
    _Opt(
        "--kube-api-url",
        _nonempty,
        "Kubernetes API server URL (default: in-cluster config)",
        "lease",
        metavar="URL",
    ),
    _Opt(
        "--node-name",
        _nonempty,
        "this node's name (default: $NODE_NAME, then the pod's node)",
        "lease",
        metavar="NAME",
    ),
    _Opt(
        "--net-config-path",
        _nonempty,
        "path to net-conf.json (with --kube-subnet-mgr)",
        "lease",
        metavar="FILE",
    ),
    _Opt(
        "--kube-annotation-prefix",
        _nonempty,
        "node annotation prefix (lease service default: flannel.alpha.coreos.com)",
        "lease",
        metavar="PREFIX",
    ),
    _Opt(
        "--set-node-network-unavailable",
        _bool,
        "set the node's NetworkUnavailable condition to False once "
        "the lease is held (lease service default: true)",
        "lease",
        kind="explicit-bool",
    ),
    _Opt(
        "--subnet-file",
        _nonempty,
        "file the lease service writes the subnet env to (lease service default: /run/flannel/subnet.env)",
        "lease",
        metavar="FILE",
    ),
    _Opt(
        "--subnet-lease-renew-margin",
        _int_in(0, 1439),
        "minutes before its expiry at which the lease is renewed (lease service default: 60)",
        "lease",
        metavar="MINUTES",
    ),
    _Opt(
        "--socket-group",
        _nonempty,
        "group owning the lease socket (default: the --lease-group)",
        "self",
        metavar="GROUP",
    ),
    _Opt(
        "--grpc-listen",
        _nonempty,
        "also serve the lease service's gRPC on this TCP address",
        "lease",
        metavar="HOST:PORT",
    ),
    # both children
    _Opt(
        "--public-ip",
        _ipv4,
        "IP address accessible by other nodes for inter-host communication",
        "both",
        metavar="IP",
    ),
    _Opt(
        "--iface",
        _nonempty,
        "interface to use (IP or name) for inter-host communication; repeatable (env: comma-separated)",
        "both",
        kind="list",
        metavar="IFACE",
        env_split=True,
    ),
    _Opt(
        "--iface-regex",
        _regex,
        "regex matching the first interface to use; repeatable",
        "lease",
        kind="list",
        metavar="REGEX",
    ),
    _Opt(
        "--public-ipv6",
        _ipv6,
        "IPv6 address accessible by other nodes for inter-host communication",
        "both",
        metavar="IPV6",
    ),
    _Opt(
        "--ip-masq",
        _bool,
        "set up IP masquerade for traffic leaving the flannel network",
        "both",
        kind="bool",
    ),
    _Opt(
        "--lease-metrics-listen",
        _host_port,
        "serve the lease service's Prometheus metrics on HOST:PORT (off by default)",
        "lease",
        metavar="HOST:PORT",
        child_flag="--metrics-listen",
    ),
    _Opt(
        "--backend-metrics-listen",
        _host_port,
        "serve the backend's Prometheus metrics on HOST:PORT (off by default)",
        "backend",
        metavar="HOST:PORT",
        child_flag="--metrics-listen",
    ),
    _Opt(
        "-v",
        _int_in(0, 10),
        "log verbosity level of the children (passed as that many -v)",
        "both",
        kind="level",
        metavar="LEVEL",
    ),
    # flanneld itself
    _Opt(
        "--run-dir",
        _nonempty,
        "directory of the children's sockets (default: /run/flannel)",
        "self",
        metavar="DIR",
    ),
    _Opt(
        "--healthz-ip", _ip, "address the healthz server listens on (default: 0.0.0.0)", "self", metavar="IP"
    ),
    _Opt(
        "--healthz-port",
        _int_in(0, 65535),
        "port of the healthz server; 0 disables it (default: 0)",
        "self",
        metavar="PORT",
    ),
    _Opt(
        "--backend-cmd",
        _command,
        "command line of a third-party backend replacing flannel-backend "
        "(it gets --run-dir and the backend flags appended)",
        "self",
        metavar="CMD",
    ),
    _Opt(
        "--lease-cmd",
        _command,
        "command line of the lease service (default: python -m lease_service)",
        "self",
        metavar="CMD",
    ),
    _Opt(
        "--lease-user", _nonempty, "run the lease service as this user (name or uid)", "self", metavar="USER"
    ),
    _Opt(
        "--lease-group",
        _nonempty,
        "run the lease service as this group (name or gid); it owns the sockets",
        "self",
        metavar="GROUP",
    ),
    _Opt("--log-format", _log_format, "text or json (default: text)", "self", metavar="FORMAT"),
    _Opt(
        "--max-restarts",
        _int_in(0),
        "restarts of one child allowed within --restart-window before flanneld gives up (default: 5)",
        "self",
        metavar="N",
    ),
    _Opt(
        "--restart-window",
        _positive_seconds,
        "seconds over which restarts are counted (default: 60)",
        "self",
        metavar="SECONDS",
    ),
    _Opt(
        "--restart-backoff-initial",
        _positive_seconds,
        "first delay before a restart (default: 0.5)",
        "self",
        metavar="SECONDS",
    ),
    _Opt(
        "--restart-backoff-max",
        _positive_seconds,
        "longest delay before a restart (default: 30)",
        "self",
        metavar="SECONDS",
    ),
    _Opt(
        "--stop-grace",
        _seconds,
        "seconds between SIGTERM and SIGKILL when stopping a child (default: 10)",
        "self",
        metavar="SECONDS",
    ),
    _Opt(
        "--probe-interval",
        _positive_seconds,
        "seconds between health probes (default: 1)",
        "self",
        metavar="SECONDS",
    ),
    _Opt(
        "--probe-timeout",
        _positive_seconds,
        "seconds one health probe may take (default: 1)",
        "self",
        metavar="SECONDS",
    ),
    _Opt(
        "--probe-failures",
        _int_in(1),
        "consecutive unanswered probes that restart a child (default: 3)",
        "self",
        metavar="N",
    ),
    _Opt(
        "--startup-timeout",
        _positive_seconds,
        "seconds a child has to answer its first health probe (default: 60)",
        "self",
        metavar="SECONDS",
    ),
)

_LEASE_FLAGS = (
    "--etcd-*, --kube-*, --set-node-network-unavailable, --node-name, --net-config-path, --public-ip, "
    "--public-ipv6, --subnet-*, --iface, --iface-regex, --ip-masq, --grpc-listen"
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flanneld",
        description=(
            "flannel-py supervisor: runs flannel-lease-service (no capabilities) and flannel-backend "
            "(CAP_NET_ADMIN, CAP_NET_RAW only), health-gates and restarts them, and serves /healthz. "
            "Every flag can also be set as an environment variable FLANNELD_<FLAG> "
            "(e.g. --etcd-endpoints as FLANNELD_ETCD_ENDPOINTS); flags win over the environment."
        ),
        epilog=(
            "Boolean flags take an optional value (--ip-masq, --ip-masq=false). Durations are seconds, "
            "or a number with ms/s/m/h. Only the flags given are passed on: the lease service gets "
            f"{_LEASE_FLAGS} and -v; the backend gets --public-ip, --public-ipv6, --ip-masq, -v and the first "
            "--iface."
        ),
    )
    groups = {
        "lease": parser.add_argument_group("lease service (subnet manager) flags"),
        "both": parser.add_argument_group("flags for both children"),
        "self": parser.add_argument_group("supervisor flags"),
    }
    groups["backend"] = groups["both"]
    for opt in _OPTIONS:
        group = groups[opt.target]
        help_text = f"{opt.help} [env {opt.env}]"
        flags = [opt.flag]
        if opt.flag == "-v":
            flags.append("--v")
        if opt.kind in ("bool", "explicit-bool"):
            group.add_argument(
                *flags,
                dest=opt.dest,
                nargs="?",
                const="true",
                default=None,
                metavar="BOOL",
                type=opt.parse,
                help=help_text,
            )
        elif opt.kind == "list":
            group.add_argument(
                *flags,
                dest=opt.dest,
                action="append",
                default=None,
                metavar=opt.metavar,
                type=opt.parse,
                help=help_text,
            )
        else:
            group.add_argument(
                *flags, dest=opt.dest, default=None, metavar=opt.metavar, type=opt.parse, help=help_text
            )
    return parser


def _from_env(opt: _Opt, environ: Mapping[str, str]) -> Any:
    raw = environ.get(opt.env)
    if raw is None:
        return None
    try:
        if opt.kind == "list":
            parts = [p.strip() for p in raw.split(",")] if opt.env_split else [raw]
            return [opt.parse(p) for p in parts if p]
        return opt.parse(raw)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"environment variable {opt.env} (flag {opt.flag}): {exc}") from None


def _resolve_user(text: str) -> tuple[int, int, str | None]:
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        if text.isdigit():  # a bare uid with no passwd entry is fine (containers)
            return int(text), int(text), None
        raise ConfigError(f"--lease-user: no such user {text!r}") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def _resolve_group(text: str, flag: str) -> tuple[int, str | None]:
    try:
        entry = grp.getgrgid(int(text)) if text.isdigit() else grp.getgrnam(text)
    except KeyError:
        if text.isdigit():
            return int(text), None
        raise ConfigError(f"{flag}: no such group {text!r}") from None
    return entry.gr_gid, entry.gr_name


def _flag_args(flag: str, kind: str, value: Any) -> list[str]:
    if value is None:
        return []
    if kind == "bool":
        return [flag] if value else []
    if kind == "explicit-bool":
        return [f"{flag}={'true' if value else 'false'}"]
    if kind == "level":
        return [flag] * int(value)
    if kind == "list":
        return [a for v in value for a in (flag, str(v))]
    return [flag, str(value)]


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Parse flags over environment over defaults.

    ``--help`` exits 0 and a malformed flag exits 2 (argparse); a bad environment value or an unknown
    user/group raises :class:`ConfigError`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = {} if environ is None else environ
    ns = vars(_build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for opt in _OPTIONS:
        value = ns.get(opt.dest)
        if value is None:
            value = _from_env(opt, environ)
        values[opt.dest] = value

    lease_args: list[str] = []
    backend_args: list[str] = []
    for opt in _OPTIONS:
        args = _flag_args(opt.child_flag or opt.flag, opt.kind, values[opt.dest])
        if opt.target in ("lease", "both"):
            lease_args += args
        if opt.target in ("backend", "both"):
            if opt.flag == "--iface" and args:
                args = args[:2]  # flannel-backend takes one interface: the first, as flannel uses it
            backend_args += args

    identity: Identity | None = None
    if values["lease_user"] is not None or values["lease_group"] is not None:
        uid, gid, user = 0, 0, None
        if values["lease_user"] is not None:
            uid, gid, user = _resolve_user(values["lease_user"])
        group = None
        if values["lease_group"] is not None:
            gid, group = _resolve_group(values["lease_group"], "--lease-group")
        identity = Identity(uid=uid, gid=gid, user=user, group=group)
    socket_group = values["socket_group"]
    if socket_group is not None:
        _resolve_group(socket_group, "--socket-group")
    elif identity is not None and (identity.gid != 0):
        socket_group = identity.group or str(identity.gid)

    def pick(name: str, default: Any) -> Any:
        return default if values[name] is None else values[name]

    restart = RestartSettings(
        max_restarts=pick("max_restarts", RestartSettings.max_restarts),
        window=pick("restart_window", RestartSettings.window),
        backoff_initial=pick("restart_backoff_initial", RestartSettings.backoff_initial),
        backoff_max=pick("restart_backoff_max", RestartSettings.backoff_max),
    )
    if restart.backoff_max < restart.backoff_initial:
        raise ConfigError(
            f"--restart-backoff-max ({restart.backoff_max}) must not be below "
            f"--restart-backoff-initial ({restart.backoff_initial})"
        )
    probe = ProbeSettings(
        interval=pick("probe_interval", ProbeSettings.interval),
        timeout=pick("probe_timeout", ProbeSettings.timeout),
        failures=pick("probe_failures", ProbeSettings.failures),
        startup_timeout=pick("startup_timeout", ProbeSettings.startup_timeout),
    )
    return Config(
        run_dir=Path(pick("run_dir", str(DEFAULT_RUN_DIR))),
        lease_cmd=tuple(shlex.split(values["lease_cmd"])) if values["lease_cmd"] else (),
        backend_cmd=tuple(shlex.split(values["backend_cmd"])) if values["backend_cmd"] else (),
        lease_identity=identity,
        healthz_ip=ipaddress.ip_address(pick("healthz_ip", "0.0.0.0")),
        healthz_port=pick("healthz_port", 0),
        log_format=pick("log_format", "text"),
        stop_grace=pick("stop_grace", 10.0),
        restart=restart,
        probe=probe,
        lease_args=tuple(lease_args),
        backend_args=tuple(backend_args),
        socket_group=socket_group,
    )
