"""The node's external interface, chosen once, as flannel chooses it (``main.go`` and ``pkg/ipmatch``).

Order: every ``--iface`` (a name, or an address of the interface), then every ``--iface-regex`` (matched
against the interfaces' usable addresses first, then their names), then ``--iface-can-reach`` (the
interface the route to that address leaves by, ``ip route get``); the first that resolves wins and
none resolving is an error. With none of the three given: the interface holding ``--public-ip`` (or
``--public-ipv6``), else the default route's (dual stack: the IPv4 and IPv6 default routes must leave
by the same interface). One difference: a public IP that no interface holds (NAT) makes flannel exit;
here it falls back to the default route's interface, with a warning. In kube mode the node's ``node-public-ip(v6)`` annotation replaces the flag.

The interface's own address of each enabled family becomes the VXLAN local address; the published
public address is ``--public-ip(v6)`` when given, else that same address. The result travels to the
backend in ``GetNetworkConfigResponse.external_interface``: nothing else decides.

The kernel is read with ``ip -json`` (no privilege needed); :func:`choose` is pure, over a
:class:`HostView`, so that every rule is unit-testable.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lease_service.netconfig import AddressT

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address


class InterfaceError(Exception):
    """No usable external interface; the message says what was looked at."""


@dataclass(frozen=True)
class Address:
    """One address of an interface, with the flags that rank it."""

    ip: IPAddress
    permanent: bool = True
    temporary: bool = False
    deprecated: bool = False


@dataclass(frozen=True)
class Link:
    """One interface as ``ip -json address show`` lists it."""

    name: str
    index: int
    mtu: int
    addresses: tuple[Address, ...] = ()

    def usable(self, family: type[AddressT]) -> list[AddressT]:
        """flannel's GetInterfaceIP4Addrs/IP6Addrs: global or link-local unicast, not deprecated; global
        before link-local, permanent before dynamic, stable before temporary."""
        found = [
            a for a in self.addresses if not a.deprecated and (_global_unicast(a.ip) or a.ip.is_link_local)
        ]
        found.sort(key=lambda a: (a.ip.is_link_local, not a.permanent, a.temporary))
        return [a.ip for a in found if isinstance(a.ip, family)]

    def has(self, address: IPAddress) -> bool:
        return any(a.ip == address for a in self.addresses)


@dataclass(frozen=True)
class Route:
    """Where the kernel sends packets for an address: the interface and the preferred source."""

    ifname: str
    src: IPAddress | None


@dataclass(frozen=True)
class HostView:
    """What the choice reads from the kernel: links in kernel order, default routes, route lookups."""

    links: tuple[Link, ...]
    default_v4: str | None  # interface of the first IPv4 default route
    default_v6: str | None
    route_get: Callable[[IPAddress], Route | None]

    def by_name(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def by_address(self, address: IPAddress) -> Link | None:
        return next((link for link in self.links if link.has(address)), None)


@dataclass(frozen=True)
class InterfaceFlags:
    """What the operator asked for (flags, and in kube mode the node's public-IP annotations)."""

    ifaces: tuple[str, ...] = ()
    iface_regexes: tuple[str, ...] = ()
    iface_can_reach: IPAddress | None = None
    public_ip: IPv4Address | None = None
    public_ipv6: IPv6Address | None = None


@dataclass(frozen=True)
class ExternalInterface:
    """The chosen interface: the VXLAN device's ``dev`` and ``local``, and the addresses published."""

    name: str
    index: int
    mtu: int
    iface_ipv4: IPv4Address | None
    iface_ipv6: IPv6Address | None
    public_ip: IPv4Address | None
    public_ipv6: IPv6Address | None


def _global_unicast(address: IPAddress) -> bool:
    """Go's net.IP.IsGlobalUnicast."""
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_link_local:
        return False
    return address != IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class _Found:
    link: Link
    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None


def _by_spec(host: HostView, spec: str, ipv4: bool, ipv6: bool) -> _Found:
    """One ``--iface`` value: an address held by an interface, or an interface name."""
    try:
        address = ip_address(spec)
    except ValueError:
        link = host.by_name(spec)
        if link is None:
            raise InterfaceError(f"--iface {spec!r}: no interface of that name") from None
        return _Found(link)
    link = host.by_address(address)
    if link is None:
        raise InterfaceError(f"--iface {spec!r}: no interface holds that address")
    if isinstance(address, IPv4Address):
        return _Found(link, ipv4=address)
    return _Found(link, ipv6=address)


def _by_regex(host: HostView, pattern: str, ipv4: bool, ipv6: bool) -> _Found:
    """One ``--iface-regex``: the first interface with a usable address matching it (every enabled family
    must match), else the first interface whose name matches."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InterfaceError(f"--iface-regex {pattern!r} is not a regular expression: {exc}") from exc
    for link in host.links:
        v4 = next((a for a in link.usable(IPv4Address) if regex.search(str(a))), None) if ipv4 else None
        v6 = next((a for a in link.usable(IPv6Address) if regex.search(str(a))), None) if ipv6 else None
        if (v4 is not None or not ipv4) and (v6 is not None or not ipv6):
            return _Found(link, ipv4=v4, ipv6=v6)
    for link in host.links:
        if regex.search(link.name):
            return _Found(link)
    available = ", ".join(
        f"{link.name}:{[str(a) for a in (link.usable(IPv4Address) if ipv4 else link.usable(IPv6Address))]}"
        for link in host.links
    )
    raise InterfaceError(f"--iface-regex {pattern!r} matches no interface name or address ({available})")


def _by_route(host: HostView, target: IPAddress) -> _Found:
    """``--iface-can-reach``: the interface the kernel would send a packet to ``target`` by."""
    route = host.route_get(target)
    if route is None:
        raise InterfaceError(f"--iface-can-reach {target}: no route to it")
    link = host.by_name(route.ifname)
    if link is None:
        raise InterfaceError(f"--iface-can-reach {target}: its route leaves by {route.ifname!r}, not found")
    src = route.src
    return _Found(
        link,
        ipv4=src if isinstance(src, IPv4Address) else None,
        ipv6=src if isinstance(src, IPv6Address) else None,
    )


def _by_default_route(host: HostView, ipv4: bool, ipv6: bool) -> _Found:
    name4 = host.default_v4 if ipv4 else None
    name6 = host.default_v6 if ipv6 else None
    if ipv4 and name4 is None:
        raise InterfaceError(
            "no IPv4 default route to find the external interface by: give --iface, "
            "--iface-regex, --iface-can-reach or --public-ip"
        )
    if ipv6 and name6 is None:
        raise InterfaceError(
            "no IPv6 default route to find the external interface by: give --iface, "
            "--iface-regex, --iface-can-reach or --public-ipv6"
        )
    if ipv4 and ipv6 and name4 != name6:
        raise InterfaceError(
            f"the IPv6 default route leaves by {name6!r} but the IPv4 one by {name4!r}: "
            "they must be the same interface (or give --iface)"
        )
    name = name4 or name6
    assert name is not None
    link = host.by_name(name)
    if link is None:
        raise InterfaceError(f"the default route's interface {name!r} was not found")
    return _Found(link)


def choose(
    flags: InterfaceFlags, host: HostView, *, ipv4: bool = True, ipv6: bool = False
) -> ExternalInterface:
    """The external interface and addresses, in flannel's order (see the module docstring)."""
    if not (ipv4 or ipv6):
        raise InterfaceError("neither IPv4 nor IPv6 is enabled in the network config")
    found: _Found | None = None
    if not (flags.ifaces or flags.iface_regexes or flags.iface_can_reach):
        given = flags.public_ip if flags.public_ip is not None else flags.public_ipv6
        if given is not None:
            link = host.by_address(given)
            if link is not None:
                found = _Found(
                    link,
                    ipv4=given if isinstance(given, IPv4Address) else None,
                    ipv6=given if isinstance(given, IPv6Address) else None,
                )
            else:  # flannel exits here; a NAT'ed public IP is common enough to carry on (README)
                found = _by_default_route(host, ipv4, ipv6)
                log.warning(
                    "public IP %s is on no interface of this node: using the default route's "
                    "interface %s for the VXLAN local address (give --iface to choose)",
                    given,
                    found.link.name,
                )
        else:
            found = _by_default_route(host, ipv4, ipv6)
    else:
        tried: list[str] = []
        attempts: list[tuple[str, Callable[[], _Found]]] = [
            *((f"--iface {s}", lambda s=s: _by_spec(host, s, ipv4, ipv6)) for s in flags.ifaces),
            *(
                (f"--iface-regex {p}", lambda p=p: _by_regex(host, p, ipv4, ipv6))
                for p in flags.iface_regexes
            ),
        ]
        reach = flags.iface_can_reach
        if reach is not None:
            attempts.append((f"--iface-can-reach {reach}", lambda: _by_route(host, reach)))
        for what, attempt in attempts:
            try:
                found = attempt()
                break
            except InterfaceError as exc:
                log.info("no interface from %s: %s", what, exc)
                tried.append(str(exc))
        if found is None:
            raise InterfaceError(
                "no interface matches the --iface, --iface-regex and --iface-can-reach given: "
                + "; ".join(tried)
            )
    return _complete(found, flags, ipv4, ipv6)


def _complete(found: _Found, flags: InterfaceFlags, ipv4: bool, ipv6: bool) -> ExternalInterface:
    """Fill the enabled families' interface addresses from the interface; the public ones from the flags."""
    link = found.link
    v4, v6 = found.ipv4, found.ipv6
    if ipv4 and v4 is None:
        first4 = link.usable(IPv4Address)
        if not first4:
            raise InterfaceError(f"interface {link.name} has no usable IPv4 address")
        v4 = first4[0]
    if ipv6 and v6 is None:
        first6 = link.usable(IPv6Address)
        if not first6:
            raise InterfaceError(f"interface {link.name} has no usable IPv6 address")
        v6 = first6[0]
    if link.mtu <= 0:
        raise InterfaceError(f"cannot determine the MTU of interface {link.name}")
    return ExternalInterface(
        name=link.name,
        index=link.index,
        mtu=link.mtu,
        iface_ipv4=v4 if ipv4 else None,
        iface_ipv6=v6 if ipv6 else None,
        public_ip=(flags.public_ip or v4) if ipv4 else None,
        public_ipv6=(flags.public_ipv6 or v6) if ipv6 else None,
    )


# --------------------------------------------------------------------------- reading the kernel


def _ip_json(*args: str) -> list[dict[str, Any]]:
    try:
        proc = subprocess.run(["ip", "-json", *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise InterfaceError(f"cannot run 'ip -json {' '.join(args)}': {exc}") from exc
    if proc.returncode != 0:
        if args[:2] == ("route", "get"):
            return []  # unreachable: no route
        raise InterfaceError(f"'ip -json {' '.join(args)}' failed: {proc.stderr.strip()}")
    try:
        doc = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise InterfaceError(f"'ip -json {' '.join(args)}' printed no JSON: {exc}") from exc
    return [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []


def _link(doc: dict[str, Any]) -> Link:
    addresses = []
    for info in doc.get("addr_info", ()):
        try:
            address = ip_address(info["local"])
        except (KeyError, ValueError, TypeError):
            continue
        addresses.append(
            Address(
                address,
                permanent=not info.get("dynamic", False),
                temporary=bool(info.get("temporary", False)),
                deprecated=bool(info.get("deprecated", False)),
            )
        )
    return Link(
        str(doc.get("ifname", "")), int(doc.get("ifindex", 0)), int(doc.get("mtu", 0)), tuple(addresses)
    )


def _default(family: str) -> str | None:
    routes = _ip_json(family, "route", "show", "default")
    return next((str(r["dev"]) for r in routes if r.get("dev")), None)


def _route_get(target: IPAddress) -> Route | None:
    routes = _ip_json("route", "get", str(target))
    for r in routes:
        if r.get("dev"):
            src = r.get("prefsrc")
            return Route(str(r["dev"]), ip_address(src) if src else None)
    return None


def read_host() -> HostView:
    """The kernel's view, read with ``ip -json``; route lookups run when :func:`choose` asks."""
    links = tuple(_link(d) for d in _ip_json("address", "show"))
    return HostView(links, _default("-4"), _default("-6"), _route_get)


def lookup(
    flags: InterfaceFlags, *, ipv4: bool = True, ipv6: bool = False, host: HostView | None = None
) -> ExternalInterface:
    """:func:`choose` over this node's kernel."""
    return choose(flags, host if host is not None else read_host(), ipv4=ipv4, ipv6=ipv6)


def describe(ext: ExternalInterface) -> str:
    """One log line's worth: ``eth1 (index 3, MTU 1500) local 192.168.1.5, public 192.168.1.5``."""
    local = ", ".join(str(a) for a in (ext.iface_ipv4, ext.iface_ipv6) if a is not None)
    public = ", ".join(str(a) for a in (ext.public_ip, ext.public_ipv6) if a is not None)
    return f"{ext.name} (index {ext.index}, MTU {ext.mtu}) local {local}, public {public}"


__all__: Sequence[str] = (
    "Address",
    "ExternalInterface",
    "HostView",
    "InterfaceError",
    "InterfaceFlags",
    "Link",
    "Route",
    "choose",
    "describe",
    "lookup",
    "read_host",
)
