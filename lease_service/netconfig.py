"""flannel's network config (``<prefix>/config`` in etcd, ``net-conf.json`` for Kubernetes),
parsed once into a frozen value with flannel's defaults filled in.

Every error names the field, the value and what was expected.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar

from flannel_rpc.logs import shorten
from flannel_rpc.untrusted import NETWORK_CONFIG, Rejected, decode_json

AddressT = TypeVar("AddressT", IPv4Address, IPv6Address)  #: an address of one family, either
NetworkT = TypeVar("NetworkT", IPv4Network, IPv6Network)  #: a network of one family, either

#: Backends flannel-backend implements. Any other type is left to a third-party backend
#: (flanneld --backend-cmd), except flannel's default, udp, which nobody here implements.
SUPPORTED_BACKENDS = ("vxlan", "host-gw")
UNSUPPORTED_BACKENDS = ("udp",)


class ConfigError(ValueError):
    """The network config is unusable; the message says which field, which value, and why."""


@dataclass(frozen=True)
class NetworkConfig:
    """A validated flannel network config."""

    enable_ipv4: bool
    enable_ipv6: bool
    network: IPv4Network | None
    subnet_len: int
    subnet_min: IPv4Address | None
    subnet_max: IPv4Address | None
    ipv6_network: IPv6Network | None
    ipv6_subnet_len: int
    ipv6_subnet_min: IPv6Address | None
    ipv6_subnet_max: IPv6Address | None
    backend_type: str
    backend: dict[str, Any]
    raw: str

    def __hash__(self) -> int:  # ``backend`` is a dict; the raw text identifies the config
        return hash(self.raw)


def parse_network_config(text: str | bytes, source: str = "network config") -> NetworkConfig:
    """Parse and validate flannel's network config JSON within :data:`NETWORK_CONFIG`'s bounds, raising
    :class:`ConfigError` (and nothing else, whatever the text)."""
    try:
        return _parse(text, source)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config that breaks a check we did not foresee is still a bad config
        raise ConfigError(f"{source}: unusable ({type(exc).__name__}: {shorten(str(exc))})") from None


def _parse(text: str | bytes, source: str) -> NetworkConfig:
    try:
        doc = decode_json(text, NETWORK_CONFIG, source)
    except Rejected as exc:
        raise ConfigError(f"{exc.message} ({exc.reason})") from None
    if isinstance(text, bytes):
        text = text.decode()
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(doc).__name__}")

    enable_ipv4 = _bool(doc, "EnableIPv4", True, source)
    enable_ipv6 = _bool(doc, "EnableIPv6", False, source)
    _bool(
        doc, "EnableNFTables", False, source
    )  # the backend reads it from ``raw``; refused here when not a bool
    if not enable_ipv4 and not enable_ipv6:
        raise ConfigError(f"{source}: EnableIPv4 and EnableIPv6 are both false: nothing to allocate")

    backend_type, backend = _backend(doc, source)

    network, subnet_len, subnet_min, subnet_max = _family(
        doc, source, enable_ipv4, IPv4Network, IPv4Address, "", default_len=24
    )
    ipv6_network, ipv6_len, ipv6_min, ipv6_max = _family(
        doc, source, enable_ipv6, IPv6Network, IPv6Address, "IPv6", default_len=64
    )
    return NetworkConfig(
        enable_ipv4=enable_ipv4,
        enable_ipv6=enable_ipv6,
        network=network,
        subnet_len=subnet_len,
        subnet_min=subnet_min,
        subnet_max=subnet_max,
        ipv6_network=ipv6_network,
        ipv6_subnet_len=ipv6_len,
        ipv6_subnet_min=ipv6_min,
        ipv6_subnet_max=ipv6_max,
        backend_type=backend_type,
        backend=backend,
        raw=text,
    )


def _bool(doc: dict[str, Any], field: str, default: bool, source: str) -> bool:
    value = doc.get(field, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {field} must be true or false, got {shorten(value)}")
    return value


def _backend(doc: dict[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    backend = doc.get("Backend")
    supported = ", ".join(SUPPORTED_BACKENDS)
    if backend is None:
        raise ConfigError(
            f'{source}: Backend is missing, which flannel reads as Backend.Type "udp"; '
            f"flannel-py does not implement udp: set Backend.Type to one of {supported}"
        )
    if not isinstance(backend, dict):
        raise ConfigError(
            f'{source}: Backend must be a JSON object like {{"Type": "vxlan"}}, got {shorten(backend)}'
        )
    backend_type = backend.get("Type", "udp")
    if not isinstance(backend_type, str):
        raise ConfigError(f"{source}: Backend.Type must be a string, got {shorten(backend_type)}")
    if not backend_type or backend_type in UNSUPPORTED_BACKENDS:
        note = " (flannel's default when Backend.Type is absent)" if "Type" not in backend else ""
        raise ConfigError(
            f"{source}: Backend.Type {shorten(backend_type)}{note} is not supported by flannel-py; "
            f"built-in types: {supported} (or any type a third-party backend serves, see docs/backends.md)"
        )
    return backend_type, backend


def _family(
    doc: dict[str, Any],
    source: str,
    enabled: bool,
    net_cls: type[NetworkT],
    addr_cls: type[AddressT],
    prefix: str,
    *,
    default_len: int,
) -> tuple[NetworkT | None, int, AddressT | None, AddressT | None]:
    """One address family's ``<prefix>Network``, ``<prefix>SubnetLen``, ``<prefix>SubnetMin`` and
    ``<prefix>SubnetMax`` (nothing when the family is disabled): subnets are at most /(bits - 2), and
    ``default_len`` long unless the network is narrower than /(default_len - 2)."""
    if not enabled:
        return None, 0, None, None
    net_field, len_field, min_field, max_field = (
        prefix + f for f in ("Network", "SubnetLen", "SubnetMin", "SubnetMax")
    )
    bits = 32 if net_cls is IPv4Network else 128
    max_len, widest_for_default = bits - 2, default_len - 2
    raw_net = doc.get(net_field)
    if raw_net in (None, ""):
        raise ConfigError(
            f"{source}: {net_field} is required when {'EnableIPv4' if bits == 32 else 'EnableIPv6'} is true"
        )
    if not isinstance(raw_net, str):
        raise ConfigError(f"{source}: {net_field} must be a CIDR string, got {shorten(raw_net)}")
    try:
        network = net_cls(raw_net, strict=False)
    except ValueError as exc:
        raise ConfigError(
            f"{source}: {net_field} {shorten(raw_net)} is not an IPv{4 if bits == 32 else 6} CIDR"
        ) from exc

    raw_len = doc.get(len_field, 0)
    if not isinstance(raw_len, int) or isinstance(raw_len, bool) or raw_len < 0:
        raise ConfigError(f"{source}: {len_field} must be a non-negative integer, got {shorten(raw_len)}")
    if raw_len:
        if raw_len > max_len:
            raise ConfigError(f"{source}: {len_field} {raw_len} is too long: at most /{max_len}")
        if raw_len < network.prefixlen + 2:
            raise ConfigError(
                f"{source}: {len_field} {raw_len} must be at least {network.prefixlen + 2} "
                f"({net_field} {network} must hold at least four subnets)"
            )
        subnet_len = raw_len
    else:
        if network.prefixlen > max_len - 2:
            raise ConfigError(
                f"{source}: {net_field} {network} is too small: the narrowest usable network is /{max_len - 2}"
            )
        subnet_len = default_len if network.prefixlen <= widest_for_default else network.prefixlen + 2

    size = 1 << (bits - subnet_len)
    first = addr_cls(int(network.network_address) + size)
    last = addr_cls(int(network.broadcast_address) + 1 - size)
    subnet_min = _bound(doc, source, addr_cls, min_field, network, subnet_len, first)
    subnet_max = _bound(doc, source, addr_cls, max_field, network, subnet_len, last)
    if int(subnet_min) > int(subnet_max):
        raise ConfigError(f"{source}: {min_field} {subnet_min} is above {max_field} {subnet_max}")
    return network, subnet_len, subnet_min, subnet_max


def _bound(
    doc: dict[str, Any],
    source: str,
    addr_cls: type[AddressT],
    field: str,
    network: IPv4Network | IPv6Network,
    subnet_len: int,
    default: AddressT,
) -> AddressT:
    raw = doc.get(field)
    if raw in (None, ""):
        return default
    if not isinstance(raw, str):
        raise ConfigError(f"{source}: {field} must be an address string, got {shorten(raw)}")
    try:
        value = addr_cls(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {field} {shorten(raw)} is not an address") from exc
    if value not in network:
        raise ConfigError(f"{source}: {field} {value} is outside the network {network}")
    bits = value.max_prefixlen
    if int(value) & ((1 << (bits - subnet_len)) - 1):
        raise ConfigError(f"{source}: {field} {value} is not on a /{subnet_len} subnet boundary")
    return value


def subnet_at(base: IPv4Address | IPv6Address, index: int, prefix_len: int) -> IPv4Network | IPv6Network:
    """The ``index``-th subnet of length ``prefix_len`` counting from ``base``."""
    bits = base.max_prefixlen
    address = ipaddress.ip_address(int(base) + (index << (bits - prefix_len)))
    return ipaddress.ip_network(f"{address}/{prefix_len}")
