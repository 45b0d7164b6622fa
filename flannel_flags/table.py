"""THE flag table: every flag of every console script, once, as data.

A row says the flag's name, how its value is parsed, its default, its help, and which processes take
it on their own command line (``flanneld``, ``lease`` = flannel-lease-service, ``backend`` =
flannel-backend, ``ctl`` = flannelctl). flanneld passes a flag on to a child that takes it, only when
the operator gave it (so each child keeps its own default); ``route`` overrides where it goes.

Rows marked ``flannel=True`` are the flags of flannel's newest ``main.go`` with flannel's names and
defaults (the ``v``/``vmodule``/``log_backtrace_at`` rows are the klog flags flannel copies in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flannel_flags import values as v

Process = Literal["flanneld", "lease", "backend", "ctl"]
Child = Literal["lease", "backend"]
Kind = Literal["value", "bool", "list", "level"]

ENV_PREFIX = "FLANNELD_"

FLANNELD: frozenset[Process] = frozenset({"flanneld"})
LEASE: frozenset[Process] = frozenset({"flanneld", "lease"})
BACKEND: frozenset[Process] = frozenset({"flanneld", "backend"})
BOTH: frozenset[Process] = frozenset({"flanneld", "lease", "backend"})


@dataclass(frozen=True)
class Flag:
    """One flag: how it is written, parsed and routed."""

    name: str
    """Without dashes: ``etcd-endpoints`` is written ``-etcd-endpoints`` or ``--etcd-endpoints``."""
    parse: Callable[[str], Any]
    default: Any
    """The typed default when the flag is not given (``None``: unset)."""
    help: str
    takers: frozenset[Process]
    kind: Kind = "value"
    """``bool``: Go boolean, never eats the next word; ``list``: repeatable; ``level``: ``-v N`` (or a
    bare ``-v`` counted once more); ``value``: takes the next word or ``=value``."""
    metavar: str = "VALUE"
    flannel: bool = False
    """A flag of flannel's flanneld (same name, meaning and default)."""
    env_split: bool = False
    """A list flag whose environment value is split on commas."""
    secret: bool = False
    """Passed to a child in its environment, never on its command line."""
    hidden: bool = False
    """Left out of ``--help`` (test knobs)."""
    no_effect: str = ""
    """Why this flannel flag changes nothing here; said once in the log when it is given."""
    route: tuple[Child, ...] | None = None
    """The children flanneld passes it to; default: the children among ``takers``."""
    child_name: str = ""
    """The flag's name at the child when it differs (``lease-metrics-listen`` → ``metrics-listen``)."""
    short: str = ""
    """A one-letter alias for flannelctl's argparse options (``-o``)."""
    aliases: tuple[str, ...] = ()
    default_text: str = ""
    """The default as the help shows it, when the typed default does not say it well."""

    @property
    def env(self) -> str:
        """``FLANNELD_ETCD_ENDPOINTS`` for ``etcd-endpoints`` (flannel's rule)."""
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def children(self) -> tuple[Child, ...]:
        """Where flanneld sends the flag when it is given."""
        if "flanneld" not in self.takers:
            return ()
        if self.route is not None:
            return self.route
        return tuple(c for c in ("lease", "backend") if c in self.takers)

    def shown_default(self) -> str:
        if self.default_text:
            return self.default_text
        if self.default is None:
            return ""
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ",".join(str(x) for x in self.default)
        return str(self.default)


_RENEW_MARGIN = v.integer(1, 1439)

FLAGS: tuple[Flag, ...] = (
    # --- the store: etcd (flannel) -------------------------------------------------------------------
    Flag(
        "etcd-endpoints",
        v.url_list,
        ("http://127.0.0.1:4001", "http://127.0.0.1:2379"),
        "comma-separated etcd URLs (http:// or https://, host and port, no path)",
        LEASE,
        metavar="URLS",
        flannel=True,
    ),
    Flag(
        "etcd-prefix",
        v.etcd_prefix,
        "/coreos.com/network",
        "etcd key prefix of the network",
        LEASE,
        metavar="PREFIX",
        flannel=True,
    ),
    Flag(
        "etcd-keyfile", v.existing_file, None, "TLS client key for etcd", LEASE, metavar="FILE", flannel=True
    ),
    Flag(
        "etcd-certfile",
        v.existing_file,
        None,
        "TLS client certificate for etcd",
        LEASE,
        metavar="FILE",
        flannel=True,
    ),
    Flag(
        "etcd-cafile",
        v.existing_file,
        None,
        "CA bundle that signs etcd's certificate",
        LEASE,
        metavar="FILE",
        flannel=True,
    ),
    Flag("etcd-username", v.text, None, "etcd user (basic auth)", LEASE, metavar="USER", flannel=True),
    Flag(
        "etcd-password",
        v.text,
        None,
        "etcd password (reaches the lease service in its environment)",
        LEASE,
        metavar="PASSWORD",
        flannel=True,
        secret=True,
    ),
    Flag(
        "etcd-call-timeout",
        v.positive_seconds,
        5.0,
        "seconds each etcd call may take",
        LEASE,
        metavar="SECONDS",
    ),
    # --- the store: Kubernetes (flannel) -------------------------------------------------------------
    Flag(
        "kube-subnet-mgr",
        v.go_bool,
        False,
        "use the Kubernetes API (Node objects) instead of etcd",
        LEASE,
        kind="bool",
        flannel=True,
    ),
    Flag(
        "kube-api-url",
        v.http_url,
        None,
        "Kubernetes API server URL (default: kubeconfig or in-cluster)",
        LEASE,
        metavar="URL",
        flannel=True,
    ),
    Flag(
        "kubeconfig-file",
        v.existing_file,
        None,
        "kubeconfig file (default: in-cluster config)",
        LEASE,
        metavar="FILE",
        flannel=True,
    ),
    Flag(
        "kube-annotation-prefix",
        v.nonempty,
        "flannel.alpha.coreos.com",
        "prefix of the node annotations",
        LEASE,
        metavar="PREFIX",
        flannel=True,
    ),
    Flag(
        "net-config-path",
        v.path,
        Path("/etc/kube-flannel/net-conf.json"),
        "network config file (net-conf.json) in Kubernetes mode",
        LEASE,
        metavar="FILE",
        flannel=True,
    ),
    Flag(
        "set-node-network-unavailable",
        v.go_bool,
        True,
        "set the node's NetworkUnavailable condition to False once the lease is held",
        LEASE,
        kind="bool",
        flannel=True,
    ),
    Flag(
        "node-name",
        v.nonempty,
        None,
        "this node's name in Kubernetes mode "
        "(default: $NODE_NAME, else the node of $POD_NAMESPACE/$POD_NAME)",
        LEASE,
        metavar="NAME",
    ),
    # --- this node's address (flannel): decided by the lease service alone, handed to the backend in
    # GetNetworkConfigResponse.external_interface -------------------------------------------------
    Flag(
        "iface",
        v.nonempty,
        (),
        "interface (name or address) for inter-host traffic; repeatable, "
        "the first that exists wins (env: comma-separated)",
        LEASE,
        kind="list",
        metavar="IFACE",
        flannel=True,
        env_split=True,
    ),
    Flag(
        "iface-regex",
        v.regex,
        (),
        "regular expression matching the interface (name or address); repeatable, tried after every --iface",
        LEASE,
        kind="list",
        metavar="REGEX",
        flannel=True,
    ),
    Flag(
        "iface-can-reach",
        v.ip_address,
        None,
        "use the interface the kernel would route this address through (as `ip route get ADDRESS`)",
        LEASE,
        metavar="ADDRESS",
        flannel=True,
    ),
    Flag(
        "public-ip",
        v.ipv4,
        None,
        "IPv4 address other nodes reach this one at (default: the interface's)",
        LEASE,
        metavar="IPV4",
        flannel=True,
    ),
    Flag(
        "public-ipv6",
        v.ipv6,
        None,
        "IPv6 address other nodes reach this one at (default: the interface's)",
        LEASE,
        metavar="IPV6",
        flannel=True,
    ),
    # --- the lease (flannel) -------------------------------------------------------------------------
    Flag(
        "subnet-file",
        v.path,
        None,
        "where subnet.env is written",
        LEASE,
        metavar="FILE",
        flannel=True,
        default_text="RUN_DIR/subnet.env (/run/flannel/subnet.env)",
    ),
    Flag(
        "subnet-lease-renew-margin",
        _RENEW_MARGIN,
        60,
        "minutes before its expiry at which the lease is renewed, 1 to 1439",
        LEASE,
        metavar="MINUTES",
        flannel=True,
    ),
    Flag(
        "subnet-lease-ttl",
        v.integer(1, 7 * 24 * 3600),
        24 * 3600,
        "seconds an etcd lease lives (test knob)",
        frozenset({"lease"}),
        metavar="SECONDS",
        hidden=True,
    ),
    Flag(
        "subnet-lease-renew-margin-seconds",
        v.positive_seconds,
        None,
        "renew margin in seconds, overriding --subnet-lease-renew-margin (test knob)",
        frozenset({"lease"}),
        metavar="SECONDS",
        hidden=True,
    ),
    # --- masquerade and forwarding (flannel) ---------------------------------------------------------
    Flag(
        "ip-masq",
        v.go_bool,
        False,
        "masquerade traffic from pods leaving the flannel network",
        BOTH,
        kind="bool",
        flannel=True,
    ),
    Flag(
        "ip-masq-fully-random-disable",
        v.go_bool,
        False,
        "do not use --random-fully in masquerade rules",
        BACKEND,
        kind="bool",
        flannel=True,
    ),
    Flag(
        "iptables-resync",
        v.integer(1, 86400),
        5,
        "seconds between checks of the iptables/nftables rules",
        BACKEND,
        metavar="SECONDS",
        flannel=True,
    ),
    Flag(
        "iptables-forward-rules",
        v.go_bool,
        True,
        "accept pod traffic in the FORWARD chain (the FLANNEL-FWD chain)",
        BACKEND,
        kind="bool",
        flannel=True,
    ),
    Flag(
        "ip-blackhole-route",
        v.go_bool,
        False,
        "add a blackhole route for this node's own pod subnet",
        BACKEND,
        kind="bool",
        flannel=True,
    ),
    Flag(
        "nftables", v.go_bool, False, "use nftables instead of iptables for the rules", BACKEND, kind="bool"
    ),
    Flag(
        "resync-period",
        v.positive_seconds,
        30.0,
        "seconds between full reconciles of the dataplane",
        BACKEND,
        metavar="SECONDS",
    ),
    # --- flanneld's health endpoint (flannel) --------------------------------------------------------
    Flag(
        "healthz-ip",
        v.ip_address,
        v.ip_address("0.0.0.0"),
        "address of the health endpoint",
        FLANNELD,
        metavar="IP",
        flannel=True,
    ),
    Flag(
        "healthz-port",
        v.integer(0, 65535),
        0,
        "port of the health endpoint; 0 turns it off",
        FLANNELD,
        metavar="PORT",
        flannel=True,
    ),
    # --- logging (flannel copies these from klog) ----------------------------------------------------
    Flag(
        "v",
        v.integer(0, 10),
        0,
        "log verbosity (a bare -v counts one more)",
        frozenset({"flanneld", "lease", "backend"}),
        kind="level",
        metavar="LEVEL",
        flannel=True,
        aliases=("verbose",),
    ),
    Flag(
        "vmodule",
        v.text,
        None,
        "klog's per-file verbosity",
        BOTH,
        metavar="PATTERN",
        flannel=True,
        no_effect="klog's per-file verbosity has no counterpart in Python logging",
        route=(),
    ),
    Flag(
        "log_backtrace_at",
        v.text,
        None,
        "klog's stack trace on a log line",
        BOTH,
        metavar="FILE:LINE",
        flannel=True,
        no_effect="klog's stack trace on a log line has no counterpart",
        route=(),
    ),
    # --- ours: sockets, metrics, listening ------------------------------------------------------------
    Flag(
        "run-dir",
        v.path,
        Path("/run/flannel"),
        "directory of lease.sock and backend.sock (and subnet.env)",
        frozenset({"flanneld", "lease", "backend", "ctl"}),
        metavar="DIR",
        route=(),
    ),
    Flag(
        "socket-group",
        v.nonempty,
        None,
        "group owning lease.sock (a name or a number; flanneld's default: the --lease-group)",
        LEASE,
        metavar="GROUP",
        route=(),
    ),
    Flag(
        "grpc-listen",
        v.host_port,
        None,
        "also serve the lease service's gRPC on this TCP HOST:PORT",
        LEASE,
        metavar="HOST:PORT",
    ),
    Flag(
        "metrics-listen",
        v.host_port,
        None,
        "serve Prometheus metrics on http://HOST:PORT/metrics",
        frozenset({"lease", "backend"}),
        metavar="HOST:PORT",
    ),
    Flag(
        "lease-metrics-listen",
        v.host_port,
        None,
        "the lease service's --metrics-listen",
        FLANNELD,
        metavar="HOST:PORT",
        route=("lease",),
        child_name="metrics-listen",
    ),
    Flag(
        "backend-metrics-listen",
        v.host_port,
        None,
        "the backend's --metrics-listen",
        FLANNELD,
        metavar="HOST:PORT",
        route=("backend",),
        child_name="metrics-listen",
    ),
    # --- ours: the supervisor ------------------------------------------------------------------------
    Flag(
        "backend-cmd",
        v.command,
        None,
        "command line of a third-party backend replacing flannel-backend "
        "(it gets --run-dir and the backend flags appended)",
        FLANNELD,
        metavar="CMD",
        default_text="python -m backend_service",
    ),
    Flag(
        "lease-cmd",
        v.command,
        None,
        "command line of the lease service",
        FLANNELD,
        metavar="CMD",
        default_text="python -m lease_service",
    ),
    Flag(
        "lease-user",
        v.nonempty,
        None,
        "run the lease service as this user (name or uid); root is possible and warned about",
        FLANNELD,
        metavar="USER",
        default_text="nobody",
    ),
    Flag(
        "lease-group",
        v.nonempty,
        None,
        "run the lease service as this group (name or gid); it owns the run dir and lease.sock",
        FLANNELD,
        metavar="GROUP",
        default_text="the user's",
    ),
    Flag(
        "log-format",
        v.choice("text", "json"),
        "text",
        "flanneld's log lines: text or json",
        FLANNELD,
        metavar="FORMAT",
    ),
    Flag(
        "max-restarts",
        v.integer(0),
        5,
        "restarts of one child allowed within --restart-window",
        FLANNELD,
        metavar="N",
    ),
    Flag(
        "restart-window",
        v.positive_seconds,
        60.0,
        "seconds over which restarts are counted",
        FLANNELD,
        metavar="SECONDS",
    ),
    Flag(
        "restart-backoff-initial",
        v.positive_seconds,
        0.5,
        "first delay before a restart",
        FLANNELD,
        metavar="SECONDS",
    ),
    Flag(
        "restart-backoff-max",
        v.positive_seconds,
        30.0,
        "longest delay before a restart",
        FLANNELD,
        metavar="SECONDS",
    ),
    Flag(
        "stop-grace",
        v.seconds,
        10.0,
        "seconds between SIGTERM and SIGKILL when stopping a child",
        FLANNELD,
        metavar="SECONDS",
    ),
    Flag(
        "probe-interval",
        v.positive_seconds,
        1.0,
        "seconds between health probes of a child",
        FLANNELD,
        metavar="SECONDS",
    ),
    Flag(
        "probe-timeout",
        v.positive_seconds,
        1.0,
        "seconds one health probe may take",
        FLANNELD,
        metavar="SECONDS",
    ),
    Flag(
        "probe-failures",
        v.integer(1),
        3,
        "unanswered probes in a row that restart a child",
        FLANNELD,
        metavar="N",
    ),
    Flag(
        "startup-timeout",
        v.positive_seconds,
        60.0,
        "seconds a child has to answer its first probe",
        FLANNELD,
        metavar="SECONDS",
    ),
    # --- ours: flannelctl ----------------------------------------------------------------------------
    Flag(
        "output",
        v.choice("text", "json"),
        "text",
        "text for people, json for machines",
        frozenset({"ctl"}),
        metavar="FORMAT",
        short="-o",
    ),
    Flag(
        "timeout",
        v.positive_seconds,
        5.0,
        "seconds to wait for each call",
        frozenset({"ctl"}),
        metavar="SECONDS",
    ),
)

#: ``FLANNELD_*`` variables that are not flags but are read by flanneld (packaging and test knobs).
OTHER_VARIABLES: frozenset[str] = frozenset({"FLANNELD_SETPRIV"})

BY_NAME: dict[str, Flag] = {}
for _flag in FLAGS:
    for _name in (_flag.name, *_flag.aliases):
        assert _name not in BY_NAME, f"flag {_name} twice in the table"
        BY_NAME[_name] = _flag


def flags_of(process: Process) -> tuple[Flag, ...]:
    """The rows a process takes, in table order."""
    return tuple(f for f in FLAGS if process in f.takers)
