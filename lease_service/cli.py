"""Flags and FLANNELD_* environment variables → one validated :class:`Settings`."""

from __future__ import annotations

import argparse
import grp
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from lease_service.etcd import EtcdSettings

DEFAULT_RUN_DIR = Path("/run/flannel")


class UsageError(ValueError):
    """A flag or environment variable has a bad value; the message names it."""


@dataclass(frozen=True)
class KubeSettings:
    """How to reach the Kubernetes API and who we are there."""

    api_url: str | None
    kubeconfig: Path | None
    annotation_prefix: str
    net_config_path: Path
    set_network_unavailable: bool
    node_name: str | None
    pod_name: str | None
    pod_namespace: str | None


@dataclass(frozen=True)
class Settings:
    """Everything the lease service was told, parsed."""

    run_dir: Path
    subnet_file: Path
    etcd: EtcdSettings
    etcd_prefix: str
    kube_subnet_mgr: bool
    kube: KubeSettings
    public_ip: IPv4Address | None
    public_ipv6: IPv6Address | None
    ifaces: tuple[str, ...]
    iface_regexes: tuple[str, ...]
    ip_masq: bool
    renew_margin: float        # seconds
    lease_ttl: int             # seconds
    socket_gid: int | None  # the group owning lease.sock (--socket-group, a name or a number)
    grpc_listen: str | None
    verbosity: int
    metrics_listen: tuple[str, int] | None = None  # (host, port) of /metrics; None: off

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "lease.sock"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flannel-lease-service",
        description=(
            "flannel-py lease service: acquires and renews this node's pod subnet in etcd (flannel's key "
            "layout), writes subnet.env, and serves flannel.v1.LeaseService (with health and reflection) on "
            "RUN_DIR/lease.sock. Needs no privilege. Every flag can also be set as FLANNELD_<FLAG> in the "
            "environment, e.g. FLANNELD_ETCD_ENDPOINTS; flags win."
        ),
    )
    add = p.add_argument
    add("--run-dir", default=str(DEFAULT_RUN_DIR), help="holds lease.sock, backend.sock and subnet.env (default %(default)s)")
    add("--subnet-file", default=None, help="where to write subnet.env (default RUN_DIR/subnet.env)")
    add("--etcd-endpoints", default="http://127.0.0.1:4001,http://127.0.0.1:2379", help="comma-separated etcd URLs (default %(default)s)")
    add("--etcd-prefix", default="/coreos.com/network", help="etcd prefix (default %(default)s)")
    add("--etcd-cafile", default=None, help="CA bundle to verify etcd's certificate")
    add("--etcd-certfile", default=None, help="client certificate for etcd")
    add("--etcd-keyfile", default=None, help="client key for etcd")
    add("--etcd-username", default=None, help="etcd username")
    add("--etcd-password", default=None, help="etcd password")
    add("--kube-subnet-mgr", action="store_true", help="use the Kubernetes API (Node objects) instead of etcd")
    add("--kube-api-url", default=None, help="Kubernetes API server URL (default: from --kubeconfig-file or in-cluster)")
    add("--kubeconfig-file", default=None, help="kubeconfig to use (default: in-cluster config)")
    add("--kube-annotation-prefix", default="flannel.alpha.coreos.com", help="node annotation prefix (default %(default)s)")
    add("--net-config-path", default="/etc/kube-flannel/net-conf.json", help="network config file in kube mode (default %(default)s)")
    add("--set-node-network-unavailable", type=_boolean, nargs="?", const=True, default=True,
        help="set the node's NetworkUnavailable condition to False once the lease is held (default true)")
    add("--node-name", default=None, help="this node's name in kube mode (default: $NODE_NAME, else the node of $POD_NAMESPACE/$POD_NAME)")
    add("--public-ip", default=None, help="IPv4 address other nodes use to reach this one")
    add("--public-ipv6", default=None, help="IPv6 address other nodes use to reach this one")
    add("--iface", action="append", default=None, help="interface (name or address) to take the public IP from; repeatable")
    add("--iface-regex", action="append", default=None, help="regex matching the interface name or address; repeatable")
    add("--ip-masq", action="store_true", help="the backend sets up masquerading (written to subnet.env as FLANNEL_IPMASQ)")
    add("--subnet-lease-renew-margin", type=float, default=60, help="renew the lease this many minutes before it expires (default %(default)s; fractions allowed)")
    add("--subnet-lease-ttl", type=int, default=24 * 3600, help=argparse.SUPPRESS)
    add("--etcd-call-timeout", type=float, default=5.0, help="seconds per etcd call (default %(default)s)")
    add("--socket-group", default=None, help="group owning lease.sock (mode 0660)")
    add("--grpc-listen", default=None, help="also serve on TCP HOST:PORT (off by default)")
    add("--metrics-listen", default=None, help="serve Prometheus metrics on http://HOST:PORT/metrics (off by default)")
    add("-v", "--verbose", action="count", default=0, help="more logging")
    return p


_BOOLEAN_FLAGS = {"kube_subnet_mgr", "ip_masq"}


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
_LIST_FLAGS = {"iface", "iface_regex"}


def _apply_environment(parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Prepend FLANNELD_* values as flags, so that explicit flags (later) win."""
    extra: list[str] = []
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    for action in parser._actions:
        long = next((o for o in action.option_strings if o.startswith("--")), None)
        if long is None or long in ("--help",):
            continue
        env = "FLANNELD_" + long[2:].upper().replace("-", "_")
        if env not in environ or long in given:
            continue
        value = environ[env]
        if action.dest in _BOOLEAN_FLAGS:
            if value.lower() in ("1", "true", "yes"):
                extra.append(long)
            elif value.lower() not in ("0", "false", "no", ""):
                raise UsageError(f"{env}={value!r}: expected true or false")
        elif action.dest in _LIST_FLAGS:
            for item in filter(None, (v.strip() for v in value.split(","))):
                extra += [long, item]
        else:
            extra += [long, value]
    return extra


def _group_id(group: str | None) -> int | None:
    if not group:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"--socket-group {group!r}: no such group") from None


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and environment into Settings; raises UsageError or exits on --help."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args([*_apply_environment(parser, argv, environ), *argv])
    run_dir = Path(args.run_dir)

    def address(flag: str, value: str | None, cls: type[IPv4Address | IPv6Address]) -> IPv4Address | IPv6Address | None:
        if value in (None, ""):
            return None
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"{flag} {value!r} is not an IPv{4 if cls is IPv4Address else 6} address") from None

    endpoints = tuple(e.strip() for e in args.etcd_endpoints.split(",") if e.strip())
    for endpoint in endpoints:
        if not endpoint.startswith(("http://", "https://")):
            raise UsageError(f"--etcd-endpoints: {endpoint!r} must start with http:// or https://")
    if not endpoints:
        raise UsageError("--etcd-endpoints is empty")
    for flag, value in (("--etcd-cafile", args.etcd_cafile), ("--etcd-certfile", args.etcd_certfile),
                        ("--etcd-keyfile", args.etcd_keyfile)):
        if value and not Path(value).is_file():
            raise UsageError(f"{flag} {value!r}: no such file")
    if args.subnet_lease_renew_margin < 0 or args.subnet_lease_renew_margin * 60 >= args.subnet_lease_ttl:
        raise UsageError(f"--subnet-lease-renew-margin {args.subnet_lease_renew_margin} must be >= 0 and below the lease TTL")
    if not args.etcd_prefix.startswith("/"):
        raise UsageError(f"--etcd-prefix {args.etcd_prefix!r} must start with /")
    if args.kubeconfig_file and not Path(args.kubeconfig_file).is_file():
        raise UsageError(f"--kubeconfig-file {args.kubeconfig_file!r}: no such file")
    if args.kube_api_url and not args.kube_api_url.startswith(("http://", "https://")):
        raise UsageError(f"--kube-api-url {args.kube_api_url!r} must start with http:// or https://")
    if args.grpc_listen and ":" not in args.grpc_listen:
        raise UsageError(f"--grpc-listen {args.grpc_listen!r} must be HOST:PORT")
    return Settings(
        run_dir=run_dir,
        subnet_file=Path(args.subnet_file) if args.subnet_file else run_dir / "subnet.env",
        etcd=EtcdSettings(
            endpoints=endpoints,
            ca_file=Path(args.etcd_cafile) if args.etcd_cafile else None,
            cert_file=Path(args.etcd_certfile) if args.etcd_certfile else None,
            key_file=Path(args.etcd_keyfile) if args.etcd_keyfile else None,
            username=args.etcd_username or None,
            password=args.etcd_password or None,
            call_timeout=args.etcd_call_timeout,
        ),
        etcd_prefix=args.etcd_prefix.rstrip("/"),
        kube_subnet_mgr=args.kube_subnet_mgr,
        kube=KubeSettings(
            api_url=args.kube_api_url,
            kubeconfig=Path(args.kubeconfig_file) if args.kubeconfig_file else None,
            annotation_prefix=args.kube_annotation_prefix,
            net_config_path=Path(args.net_config_path),
            set_network_unavailable=args.set_node_network_unavailable,
            node_name=args.node_name or environ.get("NODE_NAME") or None,
            pod_name=environ.get("POD_NAME") or None,
            pod_namespace=environ.get("POD_NAMESPACE") or None,
        ),
        public_ip=address("--public-ip", args.public_ip, IPv4Address),  # type: ignore[arg-type]
        public_ipv6=address("--public-ipv6", args.public_ipv6, IPv6Address),  # type: ignore[arg-type]
        ifaces=tuple(args.iface or ()),
        iface_regexes=tuple(args.iface_regex or ()),
        ip_masq=args.ip_masq,
        renew_margin=args.subnet_lease_renew_margin * 60.0,
        lease_ttl=args.subnet_lease_ttl,
        socket_gid=_group_id(args.socket_group),
        grpc_listen=args.grpc_listen,
        verbosity=args.verbose,
        metrics_listen=_host_port("--metrics-listen", args.metrics_listen),
    )


def _host_port(flag: str, value: str | None) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port); None when not given."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{flag} {value!r} must be HOST:PORT, e.g. 127.0.0.1:9101")
    return host.strip("[]"), int(port)
