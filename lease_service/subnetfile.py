"""flannel's ``subnet.env``: written atomically, read back to find this node's previous subnet."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from lease_service.lease import Lease, SubnetPair
from lease_service.netconfig import NetworkConfig


def render(config: NetworkConfig, lease: Lease, mtu: int, ip_masq: bool) -> str:
    """The file's text: the first usable address of the subnet, with the subnet's length."""
    lines = []
    if config.enable_ipv4 and lease.subnet is not None:
        lines.append(f"FLANNEL_NETWORK={config.network}")
        lines.append(f"FLANNEL_SUBNET={lease.subnet.network_address + 1}/{lease.subnet.prefixlen}")
    if config.enable_ipv6 and lease.ipv6_subnet is not None:
        lines.append(f"FLANNEL_IPV6_NETWORK={config.ipv6_network}")
        lines.append(
            f"FLANNEL_IPV6_SUBNET={lease.ipv6_subnet.network_address + 1}/{lease.ipv6_subnet.prefixlen}"
        )
    lines.append(f"FLANNEL_MTU={mtu}")
    lines.append(f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}")
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Replace ``path`` atomically (temporary file in the same directory, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_previous(path: Path) -> SubnetPair:
    """The subnets a previous run wrote, or (None, None) when there is no usable file."""
    try:
        text = path.read_text()
    except OSError:
        return None, None
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    subnet = ipv6 = None
    try:
        if "FLANNEL_SUBNET" in values:
            subnet = IPv4Network(values["FLANNEL_SUBNET"].strip(), strict=False)
        if "FLANNEL_IPV6_SUBNET" in values:
            ipv6 = IPv6Network(values["FLANNEL_IPV6_SUBNET"].strip(), strict=False)
    except (ValueError, ipaddress.AddressValueError):
        return None, None
    return subnet, ipv6
