"""Which address this node publishes: --public-ip, else the address of --iface / --iface-regex,
else that of the interface holding the default route. Read with ``ip -json`` (no privilege needed)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address


class PublicIPError(Exception):
    """No usable public address; the message says what was looked at."""


@dataclass(frozen=True)
class PublicAddresses:
    ipv4: IPv4Address | None
    ipv6: IPv6Address | None
    iface: str  # the interface they were found on ("" when given by flag)


def _ip_json(*args: str) -> list[dict]:  # type: ignore[type-arg]
    try:
        out = subprocess.run(["ip", "-json", *args], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PublicIPError(f"cannot run 'ip -json {' '.join(args)}': {exc}") from exc
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def _addresses(link: dict) -> list[IPv4Address | IPv6Address]:  # type: ignore[type-arg]
    found = []
    for info in link.get("addr_info", []):
        address = ip_address(info["local"])
        if address.is_link_local or address.is_loopback:
            continue
        found.append(address)
    return found


def resolve(
    public_ip: IPv4Address | None,
    public_ipv6: IPv6Address | None,
    ifaces: tuple[str, ...],
    iface_regexes: tuple[str, ...],
    want_ipv4: bool = True,
    want_ipv6: bool = False,
) -> PublicAddresses:
    """Resolve the node's public addresses as flannel does."""
    if (public_ip or not want_ipv4) and (public_ipv6 or not want_ipv6):
        return PublicAddresses(public_ip, public_ipv6, "")
    links = _ip_json("address", "show")
    chosen = None
    for wanted in ifaces:
        for link in links:
            if link.get("ifname") == wanted or any(str(a) == wanted for a in _addresses(link)):
                chosen = link
                break
        if chosen:
            break
    def usable(link: dict) -> bool:  # type: ignore[type-arg]
        found = _addresses(link)
        return any(isinstance(a, IPv4Address) for a in found) if want_ipv4 else any(isinstance(a, IPv6Address) for a in found)

    if chosen is None and iface_regexes:
        for pattern in iface_regexes:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise PublicIPError(f"--iface-regex {pattern!r} is not a regular expression: {exc}") from exc
            for link in links:
                if not usable(link):  # as flannel: the first matching interface with an address
                    continue
                if regex.search(link.get("ifname", "")) or any(regex.search(str(a)) for a in _addresses(link)):
                    chosen = link
                    break
            if chosen:
                break
    if chosen is None and (ifaces or iface_regexes):
        raise PublicIPError(f"no interface matches --iface {list(ifaces)} or --iface-regex {list(iface_regexes)}")
    if chosen is None:
        routes = _ip_json("-4" if want_ipv4 else "-6", "route", "show", "default")
        if not routes:
            raise PublicIPError("no default route to find the public interface by: give --iface or --public-ip")
        dev = routes[0].get("dev")
        chosen = next((link for link in links if link.get("ifname") == dev), None)
        if chosen is None:
            raise PublicIPError(f"default route interface {dev!r} not found")
    addresses = _addresses(chosen)
    v4 = public_ip or next((a for a in addresses if isinstance(a, IPv4Address)), None)
    v6 = public_ipv6 or next((a for a in addresses if isinstance(a, IPv6Address)), None)
    if want_ipv4 and v4 is None:
        raise PublicIPError(f"interface {chosen.get('ifname')} has no IPv4 address")
    if want_ipv6 and v6 is None:
        raise PublicIPError(f"interface {chosen.get('ifname')} has no global IPv6 address")
    return PublicAddresses(v4 if want_ipv4 else None, v6 if want_ipv6 else None, chosen.get("ifname", ""))
