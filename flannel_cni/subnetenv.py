"""``subnet.env``, as flannel's cni-plugin reads it.

``FLANNEL_NETWORK`` and ``FLANNEL_IPV6_NETWORK`` are comma-separated lists (duplicates dropped),
``FLANNEL_SUBNET``/``FLANNEL_IPV6_SUBNET`` CIDRs (kept as their network: ``10.244.3.1/24`` is
``10.244.3.0/24``), ``FLANNEL_MTU`` an unsigned 32-bit number, ``FLANNEL_IPMASQ`` true only when it
is exactly ``true``. At least one network, one subnet, the MTU and IPMASQ must be present. Other
lines are ignored; a malformed value is a named rejection (flannel's Go plugin panics on some).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from flannel_cni.errors import DECODE_FAILURE, IO_FAILURE, TRY_AGAIN_LATER, CniError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FILE_BYTES = 64 * 1024
_UINT32 = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class SubnetEnv:
    networks: tuple[ipaddress.IPv4Network, ...]
    subnet: ipaddress.IPv4Network | None
    ipv6_networks: tuple[ipaddress.IPv6Network, ...]
    ipv6_subnet: ipaddress.IPv6Network | None
    mtu: int
    ipmasq: bool


def _cidr(path: Path, key: str, text: str) -> Network:
    try:
        if "/" in text:  # an address without a prefix length is no CIDR (Go's ParseCIDR agrees)
            return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    raise CniError(DECODE_FAILURE, f"{path}: {key}={text[:60]!r} is not a CIDR") from None


def _family(path: Path, key: str, net: Network, version: int) -> Network:
    if net.version != version:
        raise CniError(DECODE_FAILURE, f"{path}: {key}={net} is not an IPv{version} CIDR")
    return net


def parse_subnet_env(text: str, path: Path) -> SubnetEnv:
    """The values of one ``subnet.env`` (``path`` only names it in errors)."""
    networks: list[Network] = []
    ipv6_networks: list[Network] = []
    subnet = ipv6_subnet = None
    mtu: int | None = None
    ipmasq: bool | None = None
    for line in text.split("\n"):
        key, sep, value = line.removesuffix("\r").partition("=")
        if key.startswith("FLANNEL_") and not sep:
            raise CniError(DECODE_FAILURE, f"{path}: line {key[:60]!r} has no '='")
        if key in ("FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"):
            version = 4 if key == "FLANNEL_NETWORK" else 6
            found: list[Network] = []
            for part in value.split(","):
                net = _family(path, key, _cidr(path, key, part), version)
                if net not in found:
                    found.append(net)
            if version == 4:
                networks = found
            else:
                ipv6_networks = found
        elif key == "FLANNEL_SUBNET":
            subnet = _family(path, key, _cidr(path, key, value), 4)
        elif key == "FLANNEL_IPV6_SUBNET":
            ipv6_subnet = _family(path, key, _cidr(path, key, value), 6)
        elif key == "FLANNEL_MTU":
            if not _UINT32.fullmatch(value) or int(value) > 0xFFFFFFFF:
                raise CniError(
                    DECODE_FAILURE, f"{path}: FLANNEL_MTU={value!r} is not an unsigned 32-bit number"
                )
            mtu = int(value)
        elif key == "FLANNEL_IPMASQ":
            ipmasq = value == "true"
    missing = []
    if not networks and not ipv6_networks:
        missing += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
    if subnet is None and ipv6_subnet is None:
        missing += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]
    if mtu is None:
        missing.append("FLANNEL_MTU")
    if ipmasq is None:
        missing.append("FLANNEL_IPMASQ")
    if missing:
        raise CniError(DECODE_FAILURE, f"{path} is missing {', '.join(missing)}")
    assert mtu is not None and ipmasq is not None
    return SubnetEnv(
        networks=tuple(n for n in networks if isinstance(n, ipaddress.IPv4Network)),
        subnet=subnet if isinstance(subnet, ipaddress.IPv4Network) else None,
        ipv6_networks=tuple(n for n in ipv6_networks if isinstance(n, ipaddress.IPv6Network)),
        ipv6_subnet=ipv6_subnet if isinstance(ipv6_subnet, ipaddress.IPv6Network) else None,
        mtu=mtu,
        ipmasq=ipmasq,
    )


def load_subnet_env(path: Path) -> SubnetEnv:
    """Read and parse ``path``. A missing file means flannel is not up yet: try again later."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise CniError(TRY_AGAIN_LATER, f"{path} does not exist: is flanneld running on this node?") from None
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise CniError(DECODE_FAILURE, f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise CniError(DECODE_FAILURE, f"{path}: not ASCII text") from None
    return parse_subnet_env(text, path)
