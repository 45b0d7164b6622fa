"""The network config, typed: the ``NetworkConfig`` proto message and its Backend JSON, parsed once.

Everything here is a frozen dataclass with ``ipaddress`` types; bad input becomes a
:class:`ConfigError` that names the field, the value and what was expected.

Backend options follow flannel's (Go's ``encoding/json`` matches keys case-insensitively and
ignores unknown keys, so we do too):

- ``vxlan``: ``VNI`` (default 1), ``Port`` (default 8472; 0 means the default), ``GBP`` (false),
  ``DirectRouting`` (false), ``Learning`` (false), ``MTU`` (the UNDERLAY MTU, as in flannel; 0: the
  external interface's; the IPv4 device gets it minus 50, the IPv6 device minus 70, and pods
  (``FLANNEL_MTU``) get it minus 50, the value flannel writes), ``MacPrefix`` (accepted and ignored: our VTEP MAC is derived, see ``vxlan.py``).
- ``host-gw``: no options.
- ``wireguard``: ``PSK`` (none), ``ListenPort`` (51820), ``ListenPortV6`` (51821), ``MTU`` (0: the underlay
  MTU; the devices and the pods get 80 bytes less), ``PersistentKeepaliveInterval`` (0: off; seconds),
  ``Mode`` (``separate``: ``flannel-wg`` for IPv4 and ``flannel-wg-v6`` for IPv6; ``auto``, ``ipv4``,
  ``ipv6``: one device ``flannel-wg`` for both families, peers reached over IPv4, IPv6 or the likelier one).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from proto.flannel.v1 import lease_pb2

from .wgkey import is_key

VXLAN = "vxlan"
HOST_GW = "host-gw"
WIREGUARD = "wireguard"
SUPPORTED_BACKENDS: tuple[str, ...] = (VXLAN, HOST_GW, WIREGUARD)

DEFAULT_VNI = 1
DEFAULT_VXLAN_PORT = 8472
MAX_VNI = (1 << 24) - 1
# Bytes VXLAN adds in front of an inner frame: outer IP + UDP (8) + VXLAN (8) + inner Ethernet (14).
VXLAN_OVERHEAD_IPV4 = 20 + 8 + 8 + 14
VXLAN_OVERHEAD_IPV6 = 40 + 8 + 8 + 14


class ConfigError(ValueError):
    """The network config or its Backend JSON is not usable; ``field`` names the offending key."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"network config: {field}={value!r}: expected {expected}")


@dataclass(frozen=True)
class VxlanOptions:
    """flannel's vxlan backend options."""

    vni: int = DEFAULT_VNI
    """VXLAN network identifier; also names the device ``flannel.<VNI>``."""
    port: int = DEFAULT_VXLAN_PORT
    """UDP destination port of the tunnel."""
    gbp: bool = False
    """VXLAN Group Based Policy extension."""
    direct_routing: bool = False
    """Route to peers on the same L2 network directly, without encapsulation."""
    learning: bool = False
    """Let the kernel learn FDB entries (flannel programs them, so off by default)."""
    mtu: int = 0
    """The underlay MTU (flannel's meaning); 0 means the external interface's MTU."""

    def underlay_mtu(self, interface_mtu: int) -> int:
        """flannel's ``cfg.MTU``: the option when set, else the external interface's MTU."""
        return self.mtu or interface_mtu

    def device_mtu(self, interface_mtu: int, *, ipv6: bool = False) -> int:
        """The VXLAN device's MTU: the underlay MTU minus the outer headers of its family.

        flannel subtracts 50 for the IPv6 device too, which leaves 20 bytes too many for an IPv6 outer
        header (40 bytes instead of 20): full-size packets would be dropped on the wire. We subtract 70.
        """
        return self.underlay_mtu(interface_mtu) - (VXLAN_OVERHEAD_IPV6 if ipv6 else VXLAN_OVERHEAD_IPV4)

    def pod_mtu(self, interface_mtu: int) -> int:
        """``FLANNEL_MTU`` as flannel writes it (``network.MTU()``): the underlay MTU minus 50."""
        return self.underlay_mtu(interface_mtu) - VXLAN_OVERHEAD_IPV4


@dataclass(frozen=True)
class HostGwOptions:
    """host-gw has no options."""


WG_MODES = ("separate", "auto", "ipv4", "ipv6")
# Bytes WireGuard adds to an inner packet: outer IPv6 header (40; IPv4's 20 fits too) + UDP (8) + type (4)
# + key index (4) + nonce (8) + authentication tag (16). flannel uses 80 for both families.
WIREGUARD_OVERHEAD = 80


@dataclass(frozen=True)
class WireGuardOptions:
    """flannel's wireguard backend options."""

    psk: str | None = dataclasses.field(default=None, repr=False)
    """Pre-shared key for every peer (WireGuard's base64 text), or None."""
    listen_port: int = 51820
    listen_port_v6: int = 51821
    """The IPv6 device's port (``separate`` mode only)."""
    mtu: int = 0
    """Underlay MTU; 0 means the external interface's. Devices and pods get ``mtu - 80``."""
    keepalive: int = 0
    """``PersistentKeepaliveInterval`` in seconds; 0 is off."""
    mode: str = "separate"

    def device_mtu(self, underlay_mtu: int) -> int:
        """The MTU of the WireGuard device(s), and of the pods, over an underlay with ``underlay_mtu``."""
        return (self.mtu or underlay_mtu) - WIREGUARD_OVERHEAD


BackendOptions = VxlanOptions | HostGwOptions | WireGuardOptions


@dataclass(frozen=True)
class NetworkConfig:
    """The cluster's network config, as the backend needs it."""

    enable_ipv4: bool
    enable_ipv6: bool
    network: IPv4Network | None
    subnet_len: int
    ipv6_network: IPv6Network | None
    ipv6_subnet_len: int
    backend_type: str
    backend: BackendOptions
    enable_nftables: bool = False
    """net-conf ``EnableNFTables``: flannel's rules as nftables tables instead of iptables chains."""


def _lookup(obj: dict[str, Any], key: str) -> tuple[bool, Any]:
    """Case-insensitive key lookup, like Go's encoding/json."""
    for k, v in obj.items():
        if k.lower() == key.lower():
            return True, v
    return False, None


def _get_int(obj: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    found, value = _lookup(obj, key)
    if not found or value is None:
        return default
    # JSON numbers only; bool is an int in Python but not in JSON.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"Backend.{key}", value, f"an integer in [{lo}, {hi}]")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"Backend.{key}", value, f"an integer in [{lo}, {hi}]")
    return int(value)


def _get_bool(obj: dict[str, Any], key: str, default: bool) -> bool:
    found, value = _lookup(obj, key)
    if not found or value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"Backend.{key}", value, "true or false")
    return value


def parse_backend(backend_json: str, backend_type: str = "") -> tuple[str, BackendOptions]:
    """Parse the Backend JSON object (``{"Type": "vxlan", "VNI": 1, ...}``) into its type and options.

    ``backend_type`` (the proto's ``backend_type``) is used when the JSON has no ``Type``; flannel's
    default type is ``udp``, which we do not support, so a config naming no type at all is refused.
    """
    obj: dict[str, Any] = {}
    if backend_json.strip():
        try:
            loaded = json.loads(backend_json)
        except json.JSONDecodeError as e:
            raise ConfigError("Backend", backend_json, f"a JSON object ({e})") from e
        if not isinstance(loaded, dict):
            raise ConfigError("Backend", loaded, "a JSON object")
        obj = loaded
    found, json_type = _lookup(obj, "Type")
    kind = json_type if found else backend_type
    if not isinstance(kind, str):
        raise ConfigError("Backend.Type", kind, "a string")
    if backend_type and kind != backend_type:
        raise ConfigError("Backend.Type", kind, f"the same type as backend_type {backend_type!r}")
    if kind == VXLAN:
        port = _get_int(obj, "Port", DEFAULT_VXLAN_PORT, 0, 65535)
        return kind, VxlanOptions(
            vni=_get_int(obj, "VNI", DEFAULT_VNI, 0, MAX_VNI),
            port=port or DEFAULT_VXLAN_PORT,
            gbp=_get_bool(obj, "GBP", False),
            direct_routing=_get_bool(obj, "DirectRouting", False),
            learning=_get_bool(obj, "Learning", False),
            mtu=_get_int(obj, "MTU", 0, 0, 65535),
        )
    if kind == HOST_GW:
        return kind, HostGwOptions()
    if kind == WIREGUARD:
        return kind, _wireguard_options(obj)
    raise ConfigError("Backend.Type", kind, "one of " + ", ".join(repr(t) for t in SUPPORTED_BACKENDS))


def _wireguard_options(obj: dict[str, Any]) -> WireGuardOptions:
    found, psk = _lookup(obj, "PSK")
    if found and psk not in (None, ""):
        if not isinstance(psk, str) or not is_key(psk):
            # Never echo a secret back into a log line.
            raise ConfigError(
                "Backend.PSK", "<hidden>", "a WireGuard key: 44 characters of base64 (wg genpsk)"
            )
    else:
        psk = None
    found, mode = _lookup(obj, "Mode")
    mode = "separate" if not found or mode in (None, "") else mode
    if mode not in WG_MODES:
        raise ConfigError("Backend.Mode", mode, "one of " + ", ".join(WG_MODES))
    return WireGuardOptions(
        psk=psk,
        listen_port=_get_int(obj, "ListenPort", 51820, 1, 65535),
        listen_port_v6=_get_int(obj, "ListenPortV6", 51821, 1, 65535),
        mtu=_get_int(obj, "MTU", 0, 0, 65535),
        keepalive=_get_int(obj, "PersistentKeepaliveInterval", 0, 0, 65535),
        mode=mode,
    )


def _network(field: str, text: str, version: int) -> IPv4Network | IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ConfigError(field, text, f"an IPv{version} network in CIDR notation ({e})") from e
    if net.version != version:
        raise ConfigError(field, text, f"an IPv{version} network in CIDR notation")
    return net


def _enable_nftables(raw: str) -> bool:
    """``EnableNFTables`` from the config as stored (a key of the top-level object, default false)."""
    if not raw.strip():
        return False
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError("raw", raw[:200], f"the network config as JSON ({e})") from e
    if not isinstance(doc, dict):
        raise ConfigError("raw", raw[:200], "a JSON object")
    value = doc.get("EnableNFTables", False)
    if not isinstance(value, bool):
        raise ConfigError("EnableNFTables", value, "true or false")
    return value


def parse_network_config(msg: lease_pb2.NetworkConfig) -> NetworkConfig:
    """Turn the lease service's ``NetworkConfig`` message into a :class:`NetworkConfig`."""
    if not msg.enable_ipv4 and not msg.enable_ipv6:
        raise ConfigError("EnableIPv4/EnableIPv6", False, "at least one address family enabled")
    network4: IPv4Network | None = None
    network6: IPv6Network | None = None
    if msg.enable_ipv4:
        net4 = _network("Network", msg.network, 4)
        assert isinstance(net4, IPv4Network)
        network4 = net4
        if not network4.prefixlen < msg.subnet_len <= 32:
            raise ConfigError("SubnetLen", msg.subnet_len, f"an integer in ({network4.prefixlen}, 32]")
    if msg.enable_ipv6:
        net6 = _network("IPv6Network", msg.ipv6_network, 6)
        assert isinstance(net6, IPv6Network)
        network6 = net6
        if not network6.prefixlen < msg.ipv6_subnet_len <= 128:
            raise ConfigError(
                "IPv6SubnetLen", msg.ipv6_subnet_len, f"an integer in ({network6.prefixlen}, 128]"
            )
    kind, options = parse_backend(msg.backend, msg.backend_type)
    return NetworkConfig(
        enable_nftables=_enable_nftables(msg.raw),
        enable_ipv4=msg.enable_ipv4,
        enable_ipv6=msg.enable_ipv6,
        network=network4,
        subnet_len=msg.subnet_len if msg.enable_ipv4 else 0,
        ipv6_network=network6,
        ipv6_subnet_len=msg.ipv6_subnet_len if msg.enable_ipv6 else 0,
        backend_type=kind,
        backend=options,
    )
