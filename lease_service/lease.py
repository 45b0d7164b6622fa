"""The lease value and flannel's etcd encoding of it.

Keys: ``<prefix>/subnets/<ip>-<len>``, or ``<ip>-<len>&<ip6>-<len6>`` for a dual-stack lease.
Values: JSON ``{"PublicIP": ..., "PublicIPv6": ..., "BackendType": ..., "BackendData": ...,
"BackendV6Data": ...}`` (flannel's LeaseAttrs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, TypeAlias

from flannel_rpc import ipv4
from flannel_rpc.logs import label, shorten
from flannel_rpc.subnets import inside
from flannel_rpc.untrusted import LEASE_VALUE, Rejected, decode_json

if TYPE_CHECKING:
    from lease_service.netconfig import AddressT, NetworkConfig

# flannel's key pattern (subnet.go): ASCII digits, anchored at the very end (Go's ``$`` is ``\Z``). Matched
# with fullmatch, so full-width digits and a trailing newline are not keys.
_KEY = re.compile(r"([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)-([0-9]+)(?:&([a-f0-9:]+)-([0-9]+))?", re.ASCII)
MAX_KEY_CHARS = 128
MAX_BACKEND_TYPE = 64  # the longest dual-stack key is 63 characters

#: Reason codes of :class:`CorruptLease` (besides the decoder's, see flannel_rpc.untrusted).
KEY_INVALID = "KEY_INVALID"
VALUE_NOT_OBJECT = "VALUE_NOT_OBJECT"
FIELD_INVALID = "FIELD_INVALID"
PUBLIC_IP_MISSING = "PUBLIC_IP_MISSING"
OUTSIDE_NETWORK = "OUTSIDE_NETWORK"
MALFORMED = "MALFORMED"


class CorruptLease(ValueError):
    """A lease in the store that cannot be used; ``reason`` is a machine-readable code, the message
    names the key and what is wrong (values shortened)."""

    def __init__(self, message: str, reason: str = MALFORMED) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)  # slots: one per lease in the cluster, kept for as long as it lives
class LeaseAttrs:
    """What a node publishes about itself."""

    public_ip: IPv4Address | None
    public_ipv6: IPv6Address | None = None
    backend_type: str = ""
    backend_data: str = ""  # JSON text, "" for none
    backend_v6_data: str = ""  # JSON text, "" for none


@dataclass(frozen=True, slots=True)
class Lease:
    """A node's lease on its pod subnet(s)."""

    key: str
    subnet: IPv4Network | None
    ipv6_subnet: IPv6Network | None
    attrs: LeaseAttrs
    expiration: datetime | None = None  # None: never expires (a reservation) or unknown
    node_name: str = ""
    store_lease_id: int = 0  # the etcd lease the key is bound to (0: none)
    mod_revision: int = 0


SubnetPair: TypeAlias = tuple[IPv4Network | None, IPv6Network | None]
"""A node's IPv4 and IPv6 subnets, either of which may be absent (as in flannel's key)."""


def make_subnet_key(subnet: IPv4Network | None, ipv6_subnet: IPv6Network | None) -> str:
    """flannel's key for a subnet pair: ``10.244.3.0-24`` or ``10.244.3.0-24&fc00:0:0:3::-64``."""
    v4 = f"{subnet.network_address}-{subnet.prefixlen}" if subnet is not None else "0.0.0.0-0"
    if ipv6_subnet is None:
        return v4
    return f"{v4}&{ipv6_subnet.network_address}-{ipv6_subnet.prefixlen}"


def parse_subnet_key(key: str) -> SubnetPair:
    """Inverse of :func:`make_subnet_key`; raises :class:`CorruptLease` naming the key."""
    match = _KEY.fullmatch(key) if len(key) <= MAX_KEY_CHARS else None
    if not match:
        raise CorruptLease(f"key {label(key)} is not a subnet key like 10.244.3.0-24", KEY_INVALID)
    try:
        v4_len = int(match.group(2))
        subnet: IPv4Network | None = ipv4.network(match.group(1), match.group(2)) or IPv4Network(
            f"{match.group(1)}/{v4_len}"
        )
        if v4_len == 0:
            subnet = None
        ipv6 = None
        if match.group(3):
            ipv6 = IPv6Network(f"{match.group(3)}/{int(match.group(4))}")
    except ValueError as exc:
        raise CorruptLease(f"key {label(key)} is not a valid subnet: {exc}", KEY_INVALID) from exc
    return subnet, ipv6


def encode_attrs(attrs: LeaseAttrs) -> bytes:
    """The JSON value flannel stores (field names and omission rules as flannel's)."""
    doc: dict[str, Any] = {"PublicIP": str(attrs.public_ip) if attrs.public_ip else "0.0.0.0"}
    if attrs.public_ipv6 is not None:
        doc["PublicIPv6"] = str(attrs.public_ipv6)
    if attrs.backend_type:
        doc["BackendType"] = attrs.backend_type
    if attrs.backend_data:
        doc["BackendData"] = json.loads(attrs.backend_data)
    if attrs.backend_v6_data:
        doc["BackendV6Data"] = json.loads(attrs.backend_v6_data)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode_attrs(key: str, value: bytes) -> LeaseAttrs:
    """Parse a stored lease value; raises :class:`CorruptLease` (and nothing else) naming the key and the
    problem, within :data:`flannel_rpc.untrusted.LEASE_VALUE`'s bounds."""
    try:
        doc = decode_json(value, LEASE_VALUE, "value")
    except Rejected as exc:
        raise CorruptLease(f"lease {key}: {exc.message}", exc.reason) from None
    if not isinstance(doc, dict):
        raise CorruptLease(
            f"lease {key}: value must be a JSON object, got {type(doc).__name__}", VALUE_NOT_OBJECT
        )
    public_ip = _address(key, doc, "PublicIP", IPv4Address)
    public_ipv6 = _address(key, doc, "PublicIPv6", IPv6Address)
    backend_type = doc.get("BackendType", "")
    if not isinstance(backend_type, str) or len(backend_type) > MAX_BACKEND_TYPE:
        raise CorruptLease(
            f"lease {key}: BackendType must be a short string, got {shorten(backend_type)}", FIELD_INVALID
        )
    return LeaseAttrs(
        public_ip=public_ip,
        public_ipv6=public_ipv6,
        backend_type=backend_type,
        backend_data=_backend_data(key, doc, "BackendData"),
        backend_v6_data=_backend_data(key, doc, "BackendV6Data"),
    )


def decode_lease(key: str, value: bytes, *, store_lease_id: int = 0, mod_revision: int = 0) -> Lease:
    """A whole lease from its subnet key (without the prefix) and stored value."""
    subnet, ipv6 = parse_subnet_key(key)
    attrs = decode_attrs(key, value)
    if subnet is not None and attrs.public_ip is None:
        raise CorruptLease(f"lease {key}: PublicIP is missing", PUBLIC_IP_MISSING)
    return Lease(
        key=key,
        subnet=subnet,
        ipv6_subnet=ipv6,
        attrs=attrs,
        store_lease_id=store_lease_id,
        mod_revision=mod_revision,
    )


def parse_address(raw: object, cls: type[AddressT], what: Callable[[], str]) -> AddressT:
    """``raw`` (untrusted) as an address of ``cls``'s family; raises :class:`CorruptLease` saying that
    ``what()`` (the place and the value, composed only for the message) is not one."""
    try:
        if not isinstance(raw, str) or len(raw) > 64 or not raw.isascii():
            raise ValueError(raw)
        if cls is IPv4Address:
            fast = ipv4.address(raw)
            if fast is not None:
                return cls(int(fast))  # the strict dotted quad, read in a fifth of the time
        return cls(raw)
    except ValueError:
        family = 4 if cls is IPv4Address else 6
        raise CorruptLease(f"{what()} is not an IPv{family} address", FIELD_INVALID) from None


def _address(key: str, doc: dict[str, Any], field: str, cls: type[AddressT]) -> AddressT | None:
    raw = doc.get(field)
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        raise CorruptLease(
            f"lease {key}: {field} must be an address string, got {shorten(raw)}", FIELD_INVALID
        )
    address = parse_address(raw, cls, lambda: f"lease {key}: {field} {shorten(raw)}")
    if address.version == 4 and not int(address):  # 0.0.0.0: none
        return None
    return address


def _backend_data(key: str, doc: dict[str, Any], field: str) -> str:
    raw = doc.get(field)
    if raw is None:
        return ""
    # Any JSON value: vxlan publishes an object, flannel's extension backend a string.
    return canonical_json(raw)


def canonical_json(value: Any) -> str:
    """The one text form of backend data: compact, sorted keys, non-ASCII kept as is (so that the text is
    never longer than what was stored: escaping could triple it)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def check_against_config(lease: Lease, config: NetworkConfig) -> None:
    """Raise :class:`CorruptLease` when the lease's subnets do not fit the network config."""
    if config.enable_ipv4:
        if lease.subnet is None:
            raise CorruptLease(
                f"lease {lease.key}: no IPv4 subnet, but the network config enables IPv4", OUTSIDE_NETWORK
            )
        _check_fits(lease.key, "subnet", lease.subnet, config.network, config.subnet_len, "SubnetLen")
    if config.enable_ipv6 and lease.ipv6_subnet is not None:
        _check_fits(
            lease.key,
            "IPv6 subnet",
            lease.ipv6_subnet,
            config.ipv6_network,
            config.ipv6_subnet_len,
            "IPv6SubnetLen",
        )


def _check_fits(
    key: str,
    what: str,
    subnet: IPv4Network | IPv6Network,
    network: IPv4Network | IPv6Network | None,
    subnet_len: int,
    len_field: str,
) -> None:
    if network is None or not inside(subnet, network):
        raise CorruptLease(f"lease {key}: {what} {subnet} is outside the network {network}", OUTSIDE_NETWORK)
    if subnet.prefixlen != subnet_len:
        raise CorruptLease(
            f"lease {key}: {what} {subnet} is not a /{subnet_len} as {len_field} says", OUTSIDE_NETWORK
        )
