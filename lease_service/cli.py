"""Flags and FLANNELD_* environment variables → one validated :class:`Settings`.

The flags are the lease service's rows of the shared table (``flannel_flags``): flannel's names,
defaults and Go syntax, parsed once here into typed values.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import flannel_flags
from flannel_rpc.sockets import LEASE_SOCKET
from lease_service.etcd import EtcdSettings

DEFAULT_RUN_DIR = Path("/run/flannel")

UsageError = flannel_flags.UsageError
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
    iface_can_reach: IPv4Address | IPv6Address | None
    ip_masq: bool
    renew_margin: float  # seconds
    lease_ttl: int  # seconds
    socket_gid: int | None  # the group owning lease.sock (--socket-group, a name or a number)
    grpc_listen: str | None
    verbosity: int
    metrics_listen: tuple[str, int] | None = None  # (host, port) of /metrics; None: off
    notices: tuple[str, ...] = ()  # logged once at start: unknown FLANNELD_* variables, flags without effect

    @property
    def socket_path(self) -> Path:
        return self.run_dir / LEASE_SOCKET


DESCRIPTION = (
    "flannel-py lease service: acquires and renews this node's pod subnet in etcd (flannel's key layout) "
    "or from the Kubernetes API, writes subnet.env, and serves flannel.v1.LeaseService (with health and "
    "reflection) on RUN_DIR/lease.sock. Needs no privilege."
)


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
    """Parse flags and environment into Settings; raises UsageError, or flannel_flags.Done for --help
    and --version."""
    environ = os.environ if environ is None else environ
    got = flannel_flags.parse("lease", argv, environ, prog="flannel-lease-service", description=DESCRIPTION)
    run_dir: Path = got["run-dir"]
    ttl: int = got["subnet-lease-ttl"]
    margin = got["subnet-lease-renew-margin-seconds"]
    if margin is None:
        margin = got["subnet-lease-renew-margin"] * 60.0
    if margin >= ttl:
        raise UsageError(
            f"--subnet-lease-renew-margin ({margin / 60:g} minutes) must be below the lease "
            f"lifetime ({ttl / 60:g} minutes)"
        )
    return Settings(
        run_dir=run_dir,
        subnet_file=got["subnet-file"] or run_dir / "subnet.env",
        etcd=EtcdSettings(
            endpoints=got["etcd-endpoints"],
            ca_file=got["etcd-cafile"],
            cert_file=got["etcd-certfile"],
            key_file=got["etcd-keyfile"],
            username=got["etcd-username"] or None,
            password=got["etcd-password"] or None,
            call_timeout=got["etcd-call-timeout"],
        ),
        etcd_prefix=got["etcd-prefix"],
        kube_subnet_mgr=got["kube-subnet-mgr"],
        kube=KubeSettings(
            api_url=got["kube-api-url"],
            kubeconfig=got["kubeconfig-file"],
            annotation_prefix=got["kube-annotation-prefix"],
            net_config_path=got["net-config-path"],
            set_network_unavailable=got["set-node-network-unavailable"],
            node_name=got["node-name"] or environ.get("NODE_NAME") or None,
            pod_name=environ.get("POD_NAME") or None,
            pod_namespace=environ.get("POD_NAMESPACE") or None,
        ),
        public_ip=got["public-ip"],
        public_ipv6=got["public-ipv6"],
        ifaces=got["iface"],
        iface_regexes=got["iface-regex"],
        iface_can_reach=got["iface-can-reach"],
        ip_masq=got["ip-masq"],
        renew_margin=margin,
        lease_ttl=ttl,
        socket_gid=_group_id(got["socket-group"]),
        grpc_listen=_host_port_text(got["grpc-listen"]),
        verbosity=got["v"],
        metrics_listen=got["metrics-listen"],
        notices=got.notices,
    )


def _host_port_text(value: tuple[str, int] | None) -> str | None:
    """The gRPC server's address form of a parsed HOST:PORT (IPv6 hosts in brackets)."""
    if value is None:
        return None
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
