"""Validation of peer leases before they reach the kernel (defence in depth).

The lease service already validates what it stores, but the backend is the process that turns
a lease into routes, so it checks again: a bad lease is rejected with a machine-readable reason
code and a message, and never stops the other leases from being programmed. Nothing here
raises: :func:`check_one` answers a peer, a :class:`Rejection` or None (our own lease), and
:func:`resolve_overlaps` splits the candidates into accepted and rejected.

Reason codes (``Rejection.reason``):

- ``MALFORMED_LEASE``: an address field is not an address / CIDR of the right family.
- ``PUBLIC_IP_NOT_UNICAST``: the public address is no node's: unspecified, broadcast, multicast, loopback,
  link-local, reserved (240/4) or IPv4-mapped.
- ``BACKEND_DATA_MALFORMED``: the backend data is not the JSON the backend publishes.
- ``BACKEND_MISMATCH``: the lease's backend type is not ours.
- ``MISSING_SUBNET``: no subnet for any address family we run.
- ``SUBNET_OUTSIDE_NETWORK``: the subnet is not inside the configured network.
- ``WRONG_PREFIX_LENGTH``: the subnet's prefix length is not SubnetLen / IPv6SubnetLen.
- ``OWN_SUBNET``: the lease is for this node's own subnet.
- ``MISSING_PUBLIC_IP``: no public address for a family the lease has a subnet in.
- ``PUBLIC_IP_IN_OVERLAY``: the public address is inside the overlay network (a routing loop).
- ``OWN_PUBLIC_IP``: the public address is this node's (a stale lease of ours, or a clash).
- ``MISSING_BACKEND_DATA``: vxlan without VNI/VtepMAC, or wireguard without a PublicKey, for a family the
  lease has a subnet in.
- ``VNI_MISMATCH``: the peer's VNI is not ours.
- ``NOT_DIRECTLY_CONNECTED``: host-gw, and the public address is not on a directly connected network.
- ``OVERLAPS_LEASE``: the subnet overlaps a lease accepted before it (ordered by key).
- ``INTERNAL_ERROR``: a bug while validating; the lease is rejected rather than trusted.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from itertools import pairwise
from operator import attrgetter

from flannel_rpc.logs import label, shorten
from flannel_rpc.subnets import inside
from proto.flannel.v1 import lease_pb2

from .config import HOST_GW, VXLAN, WIREGUARD, NetworkConfig, VxlanOptions, WireGuardOptions
from .leases import (
    BACKEND_DATA_MALFORMED,
    MALFORMED_LEASE,
    PUBLIC_IP_NOT_UNICAST,
    LeaseError,
    PeerLease,
    held_message,
    parse_lease,
)
from .node import LocalNode

log = logging.getLogger(__name__)

BACKEND_MISMATCH = "BACKEND_MISMATCH"
MISSING_SUBNET = "MISSING_SUBNET"
SUBNET_OUTSIDE_NETWORK = "SUBNET_OUTSIDE_NETWORK"
WRONG_PREFIX_LENGTH = "WRONG_PREFIX_LENGTH"
OWN_SUBNET = "OWN_SUBNET"
MISSING_PUBLIC_IP = "MISSING_PUBLIC_IP"
PUBLIC_IP_IN_OVERLAY = "PUBLIC_IP_IN_OVERLAY"
OWN_PUBLIC_IP = "OWN_PUBLIC_IP"
MISSING_BACKEND_DATA = "MISSING_BACKEND_DATA"
VNI_MISMATCH = "VNI_MISMATCH"
NOT_DIRECTLY_CONNECTED = "NOT_DIRECTLY_CONNECTED"
OVERLAPS_LEASE = "OVERLAPS_LEASE"
INTERNAL_ERROR = "INTERNAL_ERROR"

REASONS: tuple[str, ...] = (
    MALFORMED_LEASE,
    PUBLIC_IP_NOT_UNICAST,
    BACKEND_DATA_MALFORMED,
    BACKEND_MISMATCH,
    MISSING_SUBNET,
    SUBNET_OUTSIDE_NETWORK,
    WRONG_PREFIX_LENGTH,
    OWN_SUBNET,
    MISSING_PUBLIC_IP,
    PUBLIC_IP_IN_OVERLAY,
    OWN_PUBLIC_IP,
    MISSING_BACKEND_DATA,
    VNI_MISMATCH,
    NOT_DIRECTLY_CONNECTED,
    OVERLAPS_LEASE,
    INTERNAL_ERROR,
)


@dataclass(frozen=True)
class Rejection:
    """A lease we refused, with the reason code and a message naming the offending value. The lease is
    kept as it is held (``source``, its serialized message) and parsed again only for a report."""

    key: str
    source: bytes
    reason: str
    message: str

    @property
    def lease(self) -> lease_pb2.Lease:
        """The refused lease."""
        return held_message(self.source)

    def to_proto(self) -> lease_pb2.RejectedLease:
        """As reported to the lease service and in ``GetStatus``: long fields of the lease are cut (with
        their length), so that thousands of rejected 1 MB leases still fit in one status message."""
        return lease_pb2.RejectedLease(lease=trimmed(self.lease), reason=self.reason, message=self.message)


TRIM_FIELD_CHARS = 256


def trimmed(lease: lease_pb2.Lease) -> lease_pb2.Lease:
    """``lease`` with every field longer than TRIM_FIELD_CHARS cut (its length noted), for status messages."""
    long = [
        f.name for f, value in lease.ListFields() if isinstance(value, str) and len(value) > TRIM_FIELD_CHARS
    ]
    if not long:
        return lease
    copy = lease_pb2.Lease()
    copy.CopyFrom(lease)
    for name in long:
        value = getattr(copy, name)
        setattr(copy, name, f"{value[:TRIM_FIELD_CHARS]}… ({len(value)} chars)")
    return copy


def _lease_name(msg: lease_pb2.Lease) -> str:
    return label(msg.node_name or msg.key or msg.subnet or msg.ipv6_subnet or "<unnamed lease>")


def _overlap(a: IPv4Network | IPv6Network, b: IPv4Network | IPv6Network) -> bool:
    """``a`` and ``b`` (of one family) share an address: the shorter prefix holds the other's start."""
    wider = a if a.prefixlen <= b.prefixlen else b
    return int(a.network_address) & int(wider.netmask) == int(b.network_address) & int(wider.netmask)


def _check_family(peer: PeerLease, version: int, config: NetworkConfig, node: LocalNode) -> None:
    """Checks for address family ``version`` (4 or 6) of a lease that has a subnet of it; raises LeaseError
    on the first failure."""
    v6 = version == 6
    family = "IPv6" if v6 else "IPv4"
    subnet = peer.ipv6_subnet if v6 else peer.subnet
    public = peer.public_ipv6 if v6 else peer.public_ip
    network = config.ipv6_network if v6 else config.network
    subnet_len = config.ipv6_subnet_len if v6 else config.subnet_len
    own_subnet = node.ipv6_subnet if v6 else node.subnet
    own_public = node.public_ipv6 if v6 else node.public_ip
    assert subnet is not None and network is not None
    if not inside(subnet, network):
        raise LeaseError(
            SUBNET_OUTSIDE_NETWORK, f"{family} subnet {subnet} is not inside the network {network}"
        )
    if subnet.prefixlen != subnet_len:
        raise LeaseError(
            WRONG_PREFIX_LENGTH,
            f"{family} subnet {subnet} has prefix length {subnet.prefixlen}, expected {subnet_len}",
        )
    if own_subnet is not None and _overlap(subnet, own_subnet):
        raise LeaseError(OWN_SUBNET, f"{family} subnet {subnet} is this node's own subnet {own_subnet}")
    if public is None:
        raise LeaseError(
            MISSING_PUBLIC_IP, f"lease has {family} subnet {subnet} but no {family} public address"
        )
    if public in network:
        raise LeaseError(
            PUBLIC_IP_IN_OVERLAY, f"{family} public address {public} is inside the overlay network {network}"
        )
    if own_public is not None and public == own_public:
        raise LeaseError(OWN_PUBLIC_IP, f"{family} public address {public} is this node's own public address")
    if config.backend_type == VXLAN:
        assert isinstance(config.backend, VxlanOptions)
        data = peer.vxlan if subnet.version == 4 else peer.vxlan_v6
        data_field = "backend_data" if subnet.version == 4 else "backend_v6_data"
        if data is None:
            raise LeaseError(
                MISSING_BACKEND_DATA, f"vxlan lease with {family} subnet {subnet} has no {data_field}"
            )
        if data.vni != config.backend.vni:
            raise LeaseError(
                VNI_MISMATCH, f"{data_field} has VNI {data.vni}, this network uses VNI {config.backend.vni}"
            )
    elif config.backend_type == WIREGUARD:
        data_field = "backend_data" if subnet.version == 4 else "backend_v6_data"
        # In separate mode each family carries its own key; the single-device modes need one of them.
        wg = peer.wireguard if subnet.version == 4 else peer.wireguard_v6
        if wg is None and (
            isinstance(config.backend, WireGuardOptions) and config.backend.mode != "separate"
        ):
            wg = peer.wireguard or peer.wireguard_v6
        if wg is None:
            raise LeaseError(
                MISSING_BACKEND_DATA,
                f"wireguard lease with {family} subnet {subnet} has no PublicKey in {data_field}",
            )
    elif config.backend_type == HOST_GW and node.connected_network(public) is None:
        raise LeaseError(
            NOT_DIRECTLY_CONNECTED,
            f"host-gw needs peers on a directly connected network; {family} public address {public} is not",
        )


def check_lease(
    msg: lease_pb2.Lease, config: NetworkConfig, node: LocalNode, source: bytes = b""
) -> PeerLease:
    """Parse and check one lease (held as ``source``) on its own (no overlap check); raises
    :class:`LeaseError`."""
    if msg.backend_type != config.backend_type:
        raise LeaseError(
            BACKEND_MISMATCH,
            f"backend_type {msg.backend_type!r} is not this network's {config.backend_type!r}",
        )
    peer = parse_lease(msg, source)
    v4 = config.enable_ipv4 and peer.subnet is not None
    v6 = config.enable_ipv6 and peer.ipv6_subnet is not None
    if not v4 and not v6:
        wanted = " or ".join(
            f for f, on in (("subnet", config.enable_ipv4), ("ipv6_subnet", config.enable_ipv6)) if on
        )
        raise LeaseError(MISSING_SUBNET, f"lease has no {wanted}")
    for version, present in ((4, v4), (6, v6)):
        if present:
            _check_family(peer, version, config, node)
    # Families we do not run are dropped, so that nothing below programs them.
    if not config.enable_ipv4 and (peer.subnet is not None or peer.vxlan is not None):
        peer = dataclasses.replace(peer, subnet=None, public_ip=None, vxlan=None)
    if not config.enable_ipv6 and (peer.ipv6_subnet is not None or peer.vxlan_v6 is not None):
        peer = dataclasses.replace(peer, ipv6_subnet=None, public_ipv6=None, vxlan_v6=None)
    return peer


@functools.lru_cache(maxsize=16)
def _text(value: object) -> str:
    """``str(value)`` of this node's addresses, asked once per lease."""
    return str(value)


def _same(a: str, b: object, parse: Callable[[str], object]) -> bool:
    if b is None or not a:
        return False
    if a == _text(b):
        return True
    if ":" not in a:  # IPv4 text has one spelling: a different text is a different address
        return False
    try:  # IPv6 has several spellings of one address
        return parse(a) == b
    except ValueError:
        return False


def _is_own_lease(msg: lease_pb2.Lease, node: LocalNode) -> bool:
    """This node's own lease (same subnet and public address): skipped silently, it needs no route."""
    v4 = _same(msg.subnet, node.subnet, ip_network) and _same(msg.public_ip, node.public_ip, ip_address)
    v6 = _same(msg.ipv6_subnet, node.ipv6_subnet, ip_network) and _same(
        msg.public_ipv6, node.public_ipv6, ip_address
    )
    return v4 or v6


def check_one(source: bytes, config: NetworkConfig, node: LocalNode) -> PeerLease | Rejection | None:
    """One lease as held (its serialized message) on its own (overlaps are :func:`resolve_overlaps`' job);
    never raises.

    None for this node's own lease (neither accepted nor rejected), a :class:`Rejection` with the
    reason code, or the parsed peer.
    """
    msg = held_message(source)  # serialized by the lease view from a parsed message: cannot fail
    if _is_own_lease(msg, node):
        return None
    key = sys.intern(msg.key)
    try:
        return check_lease(msg, config, node, source)
    except LeaseError as e:
        return Rejection(key, source, e.reason, f"lease {_lease_name(msg)}: {e.message}")
    except Exception as e:  # noqa: BLE001 - a bug must cost one lease, not the dataplane (one line, no traceback)
        log.error("validating lease %s failed: %s: %s", _lease_name(msg), type(e).__name__, shorten(str(e)))
        return Rejection(
            key, source, INTERNAL_ERROR, f"lease {_lease_name(msg)}: {type(e).__name__}: {shorten(str(e))}"
        )


def subnets(peer: PeerLease) -> tuple[IPv4Network | IPv6Network, ...]:
    """The subnets a peer claims (one per address family it has)."""
    return tuple(net for net in (peer.subnet, peer.ipv6_subnet) if net is not None)


def _by_key(candidates: Iterable[PeerLease]) -> list[PeerLease]:
    """``candidates`` by key; leases of one key (never from the planner, whose verdicts are by key) by their
    fields. No tuple and no text per lease: at 10,000 peers those were ~1.3 MB alive during a full plan."""
    ordered = sorted(candidates, key=attrgetter("key"))
    if any(a.key == b.key for a, b in pairwise(ordered)):
        ordered.sort(key=lambda p: (p.key, p.node_name, str(p.subnet), str(p.ipv6_subnet)))
    return ordered


def resolve_overlaps(candidates: Iterable[PeerLease]) -> tuple[list[PeerLease], list[Rejection]]:
    """Accept candidates by key order; one whose subnet a smaller key already holds is rejected.

    The decision for a lease depends only on the leases that share a subnet with it (directly or
    through others), so it is the same over the whole cluster or over such a closed group.
    """
    accepted: list[PeerLease] = []
    rejected: list[Rejection] = []
    taken: dict[IPv4Network | IPv6Network, PeerLease] = {}
    for peer in _by_key(candidates):
        # The prefix length check made every subnet of a family the same size: overlap is equality.
        clash = next(((net, taken[net]) for net in subnets(peer) if net in taken), None)
        if clash is not None:
            net, other = clash
            rejected.append(
                Rejection(
                    peer.key,
                    peer.source,
                    OVERLAPS_LEASE,
                    f"lease {peer.name}: subnet {net} overlaps the subnet of lease {other.name}",
                )
            )
            continue
        for net in subnets(peer):
            taken[net] = peer
        accepted.append(peer)
    return accepted, rejected
