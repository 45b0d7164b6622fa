"""Builders for leases, configs and nodes used across the backend tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from backend_service.config import NetworkConfig, parse_network_config
from backend_service.leases import PeerLease
from backend_service.node import ConnectedNetwork, LocalNode
from backend_service.validate import Rejection, check_one, resolve_overlaps
from backend_service.vxlan.device import vtep_mac
from proto.flannel.v1 import lease_pb2


def config(
    backend: str = "vxlan", *, ipv6: bool = False, ipv4: bool = True, **options: object
) -> NetworkConfig:
    """A parsed network config: 10.244.0.0/16 in /24s (and fd00:10::/56 in /64s with ipv6)."""
    msg = lease_pb2.NetworkConfig(
        enable_ipv4=ipv4,
        network="10.244.0.0/16" if ipv4 else "",
        subnet_len=24 if ipv4 else 0,
        enable_ipv6=ipv6,
        ipv6_network="fd00:10::/56" if ipv6 else "",
        ipv6_subnet_len=64 if ipv6 else 0,
        backend_type=backend,
        backend=json.dumps({"Type": backend, **options}),
    )
    return parse_network_config(msg)


def lease(
    n: int,
    *,
    backend: str = "vxlan",
    vni: int = 1,
    public_ip: str | None = None,
    ipv6: bool = False,
    **overrides: str,
) -> lease_pb2.Lease:
    """Node ``n``'s lease: subnet 10.244.<n>.0/24, public IP 192.168.77.<n> (IPv6: fd00:10:0:<n>::/64, fd77::<n>)."""
    public = public_ip if public_ip is not None else f"192.168.77.{n}"
    fields: dict[str, str] = {
        "key": f"10.244.{n}.0-24",
        "node_name": f"node-{n}",
        "subnet": f"10.244.{n}.0/24",
        "public_ip": public,
        "backend_type": backend,
    }
    if backend == "vxlan":
        fields["backend_data"] = json.dumps(
            {"VNI": vni, "VtepMAC": vtep_mac(vni, ip_address(f"192.168.77.{n}"))}
        )
    if ipv6:
        fields["ipv6_subnet"] = f"fd00:10:0:{n:x}::/64"
        fields["public_ipv6"] = f"fd77::{n:x}"
        if backend == "vxlan":
            fields["backend_v6_data"] = json.dumps(
                {"VNI": vni, "VtepMAC": vtep_mac(vni, ip_address(f"fd77::{n:x}"))}
            )
    fields.update(overrides)
    return lease_pb2.Lease(**fields)


def node(
    n: int = 1, *, ipv6: bool = False, connected: tuple[tuple[str, str], ...] = (("192.168.77.0/24", "eth0"),)
) -> LocalNode:
    """This node as node ``n`` of :func:`lease`, with ``connected`` (network, ifname) pairs."""
    return LocalNode(
        subnet=IPv4Network(f"10.244.{n}.0/24"),
        ipv6_subnet=IPv6Network(f"fd00:10:0:{n:x}::/64") if ipv6 else None,
        public_ip=IPv4Address(f"192.168.77.{n}"),
        public_ipv6=IPv6Address(f"fd77::{n:x}") if ipv6 else None,
        connected=tuple(ConnectedNetwork(ip_network(net), ifname) for net, ifname in connected),
    )


@dataclass(frozen=True)
class ValidationResult:
    """The leases that may be programmed (sorted by key) and the rejected ones."""

    accepted: tuple[PeerLease, ...]
    rejected: tuple[Rejection, ...]


def held(*leases: lease_pb2.Lease) -> dict[str, bytes]:
    """``leases`` as the lease view holds them: key → the lease serialized."""
    return {msg.key: msg.SerializeToString() for msg in leases}


def held_changes(changes: Mapping[str, lease_pb2.Lease | None]) -> dict[str, bytes | None]:
    """Changed leases (key → lease, None when removed) as the lease view hands them out."""
    return {key: None if msg is None else msg.SerializeToString() for key, msg in changes.items()}


def validate_leases(
    leases: Iterable[lease_pb2.Lease], config: NetworkConfig, node: LocalNode
) -> ValidationResult:
    """Validate every lease; never raises. Overlaps are resolved by key order: the first key wins.

    ``leases`` may include this node's own lease, which is skipped (neither accepted nor rejected).
    """
    rejected: list[Rejection] = []
    candidates: list[PeerLease] = []
    for msg in leases:
        verdict = check_one(msg.SerializeToString(), config, node)
        if isinstance(verdict, Rejection):
            rejected.append(verdict)
        elif verdict is not None:
            candidates.append(verdict)
    accepted, overlaps = resolve_overlaps(candidates)
    return ValidationResult(tuple(accepted), tuple(rejected + overlaps))
