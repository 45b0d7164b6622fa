"""Peer leases, typed: a proto ``Lease`` parsed once into a :class:`PeerLease`.

Addresses become ``ipaddress`` values; backend data JSON becomes a typed value for the backends
we know (vxlan: ``{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}``, the same shape in
``backend_v6_data``). Anything malformed raises :class:`LeaseError` with a machine-readable
reason code; :mod:`backend_service.validate` turns that into a rejection.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar

from flannel_rpc import ipv4, vxlan_data
from flannel_rpc.logs import shorten
from flannel_rpc.untrusted import MIB, JsonLimits, Refused, Rejected, decode_json
from proto.flannel.v1 import lease_pb2

from .config import MAX_VNI, VXLAN, WIREGUARD
from .wgkey import is_key

# Reason codes raised while parsing (validate.py adds the semantic ones).
MALFORMED_LEASE = "MALFORMED_LEASE"
BACKEND_DATA_MALFORMED = "BACKEND_DATA_MALFORMED"
PUBLIC_IP_NOT_UNICAST = "PUBLIC_IP_NOT_UNICAST"

#: Backend data as the backend reads it from a streamed lease (the lease service bounded it already).
_BACKEND_DATA_LIMITS = JsonLimits(max_bytes=MIB + MIB // 2)

_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", re.ASCII)


class LeaseError(Refused):
    """A lease that cannot be used; ``reason`` is a machine-readable code, the message is for humans."""


@dataclass(frozen=True, slots=True)
class VxlanData:
    """The backend data a vxlan node publishes: its VNI and its VTEP's MAC (lower case)."""

    vni: int
    vtep_mac: str

    def to_json(self) -> str:
        """flannel's JSON form, as published in the lease."""
        return json.dumps({"VNI": self.vni, "VtepMAC": self.vtep_mac}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class WireGuardData:
    """The backend data a wireguard node publishes: its public key (``{"PublicKey": "<base64>"}``)."""

    public_key: str

    def to_json(self) -> str:
        """flannel's JSON form, as published in the lease."""
        return json.dumps({"PublicKey": self.public_key}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PeerLease:
    """One node's lease, parsed. ``None`` means "not present" for every optional field."""

    key: str
    node_name: str
    subnet: IPv4Network | None
    ipv6_subnet: IPv6Network | None
    public_ip: IPv4Address | None
    public_ipv6: IPv6Address | None
    backend_type: str
    vxlan: VxlanData | None = None
    """Parsed ``backend_data`` when ``backend_type`` is vxlan and data is present."""
    vxlan_v6: VxlanData | None = None
    """Parsed ``backend_v6_data`` when ``backend_type`` is vxlan and data is present."""
    wireguard: WireGuardData | None = None
    """Parsed ``backend_data`` when ``backend_type`` is wireguard and data is present."""
    wireguard_v6: WireGuardData | None = None
    """Parsed ``backend_v6_data`` when ``backend_type`` is wireguard and data is present."""
    source: bytes = field(default=b"", compare=False, hash=False, repr=False)
    """The lease as the backend holds it (its serialized message, see :class:`~backend_service.follow.LeaseView`):
    how the planner tells an unchanged lease, and what a rejection reports; empty when parsed from a
    message alone."""

    @property
    def name(self) -> str:
        """What an operator calls this lease in logs: node name, else store key, else subnet."""
        return self.node_name or self.key or str(self.subnet or self.ipv6_subnet)


_Network = TypeVar("_Network", IPv4Network, IPv6Network)
_Address = TypeVar("_Address", IPv4Address, IPv6Address)
_Value = TypeVar("_Value", IPv4Network, IPv6Network, IPv4Address, IPv6Address)


def _opt_network(fieldname: str, text: str, kind: type[_Network]) -> _Network | None:
    return _optional(fieldname, text, kind, ipaddress.ip_network, "CIDR")


def _opt_address(fieldname: str, text: str, kind: type[_Address]) -> _Address | None:
    return _optional(fieldname, text, kind, ipaddress.ip_address, "address")


def _optional(
    fieldname: str, text: str, kind: type[_Value], parse: Callable[[str], object], what: str
) -> _Value | None:
    """``text`` as a ``kind`` (a strict CIDR or an address of one family), None when empty; else MALFORMED_LEASE."""
    if not text:
        return None
    version = 4 if kind in (IPv4Network, IPv4Address) else 6
    try:
        if len(text) > 64 or not text.isascii():
            raise ValueError("not an address")
        value = parse(text)
    except ValueError as e:
        raise LeaseError(MALFORMED_LEASE, f"{fieldname}={shorten(text)} is not an IPv{version} {what}") from e
    if not isinstance(value, kind):
        raise LeaseError(MALFORMED_LEASE, f"{fieldname}={shorten(text)} is not an IPv{version} {what}")
    return value


def _public_address(fieldname: str, text: str, kind: type[_Address]) -> _Address | None:
    """A peer's underlay address: a unicast address of the family that no node can fail to be
    (never 0.0.0.0, broadcast, multicast, loopback, link-local or reserved)."""
    addr = _opt_address(fieldname, text, kind)
    if addr is None:
        return None
    what = _not_unicast(addr)
    if what:
        raise LeaseError(PUBLIC_IP_NOT_UNICAST, f"{fieldname}={addr} is {what}, not a node's unicast address")
    return addr


def _public_v4(fieldname: str, text: str) -> IPv4Address | None:
    """:func:`_public_address` of IPv4 text, in a tenth of the time for the strict dotted quad."""
    addr = ipv4.address(text) if text else None
    if addr is None:
        return _public_address(fieldname, text, IPv4Address)
    what = _not_unicast_v4(int(addr))
    if what:
        raise LeaseError(PUBLIC_IP_NOT_UNICAST, f"{fieldname}={addr} is {what}, not a node's unicast address")
    return addr


def _not_unicast(addr: IPv4Address | IPv6Address) -> str:
    if isinstance(addr, IPv4Address):
        return _not_unicast_v4(int(addr))
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.ipv4_mapped is not None:
        return "an IPv4-mapped address"
    return ""


def _not_unicast_v4(value: int) -> str:
    """:func:`_not_unicast` of an IPv4 address, on its integer (``ipaddress``' properties build a network
    per question)."""
    if value == 0:
        return "the unspecified address"
    if value == 0xFFFFFFFF:
        return "the broadcast address"
    if value >> 28 == 0xE:  # 224.0.0.0/4
        return "a multicast address"
    if value >> 24 == 127:
        return "a loopback address"
    if value >> 16 == 0xA9FE:  # 169.254.0.0/16
        return "a link-local address"
    if value >> 28 == 0xF:
        return "a reserved address (240.0.0.0/4)"
    return ""


def _backend_object(fieldname: str, text: str) -> dict[str, Any]:
    """Backend data as a JSON object with its keys lower-cased, decoded within the untrusted-JSON bounds."""
    try:
        obj = decode_json(text, _BACKEND_DATA_LIMITS, fieldname)
    except Rejected as e:
        raise LeaseError(BACKEND_DATA_MALFORMED, f"{e.message} ({e.reason})") from None
    if not isinstance(obj, dict):
        raise LeaseError(BACKEND_DATA_MALFORMED, f"{fieldname}={shorten(text)} is not a JSON object")
    return {str(k).lower(): v for k, v in obj.items()}


def parse_vxlan_data(fieldname: str, text: str) -> VxlanData:
    """Parse vxlan backend data ``{"VNI": <int>, "VtepMAC": "<mac>"}`` (keys case-insensitive)."""
    fast = vxlan_data.fields(text)
    if fast is not None:  # exactly that object, as flannel and we write it: no JSON decoder needed
        number, fast_mac = fast[0], fast[1].lower()
        if number <= MAX_VNI and not int(fast_mac[:2], 16) & 1 and fast_mac != "00:00:00:00:00:00":
            return VxlanData(vni=number, vtep_mac=fast_mac)
    lowered = _backend_object(fieldname, text)
    vni = lowered.get("vni")
    if isinstance(vni, bool) or not isinstance(vni, int) or not 0 <= vni <= MAX_VNI:
        raise LeaseError(
            BACKEND_DATA_MALFORMED, f"{fieldname}: VNI={shorten(vni)} is not an integer in [0, {MAX_VNI}]"
        )
    mac = lowered.get("vtepmac")
    if not isinstance(mac, str) or not _MAC_RE.fullmatch(mac.lower()):
        raise LeaseError(BACKEND_DATA_MALFORMED, f"{fieldname}: VtepMAC={shorten(mac)} is not a MAC address")
    mac = mac.lower()
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise LeaseError(BACKEND_DATA_MALFORMED, f"{fieldname}: VtepMAC={mac!r} is not a unicast MAC address")
    return VxlanData(vni=vni, vtep_mac=mac)


def parse_wireguard_data(fieldname: str, text: str) -> WireGuardData:
    """Parse wireguard backend data ``{"PublicKey": "<44 characters of base64>"}`` (key case-insensitive)."""
    key = _backend_object(fieldname, text).get("publickey")
    if not is_key(key):
        shown = key[:60] if isinstance(key, str) else key
        raise LeaseError(BACKEND_DATA_MALFORMED, f"{fieldname}: PublicKey={shown!r} is not a WireGuard key")
    return WireGuardData(key)


def held_message(source: bytes) -> lease_pb2.Lease:
    """The message of a lease as the backend holds it (serialized, see :class:`PeerLease.source`)."""
    msg = lease_pb2.Lease()
    msg.ParseFromString(source)
    return msg


def parse_lease(msg: lease_pb2.Lease, source: bytes = b"") -> PeerLease:
    """Parse a proto ``Lease`` (held as ``source``); raises :class:`LeaseError` for malformed addresses or
    backend data."""
    vxlan4 = vxlan6 = None
    wg4 = wg6 = None
    if msg.backend_type == VXLAN:
        if msg.backend_data:
            vxlan4 = parse_vxlan_data("backend_data", msg.backend_data)
        if msg.backend_v6_data:
            vxlan6 = parse_vxlan_data("backend_v6_data", msg.backend_v6_data)
    elif msg.backend_type == WIREGUARD:
        if msg.backend_data:
            wg4 = parse_wireguard_data("backend_data", msg.backend_data)
        if msg.backend_v6_data:
            wg6 = parse_wireguard_data("backend_v6_data", msg.backend_v6_data)
    return PeerLease(
        key=sys.intern(msg.key),  # one string per key for the view, the verdicts and every map of the planner
        node_name=msg.node_name,
        subnet=ipv4.cidr(msg.subnet) or _opt_network("subnet", msg.subnet, IPv4Network),
        ipv6_subnet=_opt_network("ipv6_subnet", msg.ipv6_subnet, IPv6Network),
        public_ip=_public_v4("public_ip", msg.public_ip),
        public_ipv6=_public_address("public_ipv6", msg.public_ipv6, IPv6Address),
        backend_type=sys.intern(msg.backend_type),
        vxlan=vxlan4,
        vxlan_v6=vxlan6,
        wireguard=wg4,
        wireguard_v6=wg6,
        source=source,
    )
