"""The external interface is chosen as flannel chooses it (main.go, pkg/ipmatch): --iface (names and
addresses, in order), --iface-regex, --iface-can-reach, else the interface holding --public-ip, else the
default route's; the interface's address is the VXLAN local address, --public-ip what is published."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from flannel_testkit.netns import Netns, netns
from lease_service.extiface import (
    Address,
    ExternalInterface,
    HostView,
    InterfaceError,
    InterfaceFlags,
    Link,
    Route,
    choose,
)

A = ip_address


def host(
    *links: Link,
    default_v4: str | None = None,
    default_v6: str | None = None,
    routes: dict[str, Route] | None = None,
) -> HostView:
    return HostView(links, default_v4, default_v6, lambda target: (routes or {}).get(str(target)))


LO = Link("lo", 1, 65536, (Address(A("127.0.0.1")), Address(A("::1"))))
ETH0 = Link("eth0", 2, 1500, (Address(A("10.0.2.15")), Address(A("fd00::15")), Address(A("fe80::1"))))
ETH1 = Link("eth1", 3, 9000, (Address(A("192.168.56.10")), Address(A("fd56::10"))))
HOST = host(
    LO,
    ETH0,
    ETH1,
    default_v4="eth0",
    default_v6="eth0",
    routes={"192.168.56.1": Route("eth1", A("192.168.56.10")), "10.9.9.9": Route("eth0", A("10.0.2.15"))},
)


def chosen(flags: InterfaceFlags, view: HostView = HOST, **family: bool) -> tuple[str, str, str]:
    ext = choose(flags, view, **family)
    return ext.name, str(ext.iface_ipv4 or ext.iface_ipv6), str(ext.public_ip or ext.public_ipv6)


def test_nothing_given_is_the_default_route_interface() -> None:
    assert choose(InterfaceFlags(), HOST) == ExternalInterface(
        "eth0", 2, 1500, IPv4Address("10.0.2.15"), None, IPv4Address("10.0.2.15"), None
    )


def test_dual_stack_takes_both_addresses_of_the_interface_and_needs_one_default_interface() -> None:
    ext = choose(InterfaceFlags(), HOST, ipv6=True)
    assert (ext.iface_ipv4, ext.iface_ipv6, ext.public_ipv6) == (A("10.0.2.15"), A("fd00::15"), A("fd00::15"))
    split = host(ETH0, ETH1, default_v4="eth0", default_v6="eth1")
    with pytest.raises(InterfaceError, match="must be the same interface"):
        choose(InterfaceFlags(), split, ipv6=True)
    assert chosen(InterfaceFlags(), split, ipv4=False, ipv6=True) == ("eth1", "fd56::10", "fd56::10")


def test_iface_by_name_or_address_in_order_first_that_exists_wins() -> None:
    assert chosen(InterfaceFlags(ifaces=("eth1",))) == ("eth1", "192.168.56.10", "192.168.56.10")
    assert chosen(InterfaceFlags(ifaces=("192.168.56.10",))) == ("eth1", "192.168.56.10", "192.168.56.10")
    assert chosen(InterfaceFlags(ifaces=("wlan9", "10.1.1.1", "eth1", "eth0")))[0] == "eth1"


def test_iface_regex_matches_addresses_first_then_names() -> None:
    assert chosen(InterfaceFlags(iface_regexes=(r"^192\.168\.",)))[0] == "eth1"
    assert chosen(InterfaceFlags(iface_regexes=("th1$",)))[0] == "eth1"
    # dual stack: an interface matches by address only when both families match
    assert chosen(InterfaceFlags(iface_regexes=("^(192|fd56)",)), ipv6=True)[0] == "eth1"
    with pytest.raises(InterfaceError, match="matches no interface"):  # no IPv6 address matches, nor a name
        choose(InterfaceFlags(iface_regexes=("^192",)), HOST, ipv6=True)
    with pytest.raises(InterfaceError, match="matches no interface"):
        choose(InterfaceFlags(iface_regexes=("^wlan",)), HOST)
    with pytest.raises(InterfaceError, match="not a regular expression"):
        choose(InterfaceFlags(iface_regexes=("eth[",)), HOST)


def test_iface_comes_before_regex_and_regex_before_can_reach() -> None:
    flags = InterfaceFlags(ifaces=("eth0",), iface_regexes=("eth1",), iface_can_reach=A("192.168.56.1"))
    assert chosen(flags)[0] == "eth0"
    flags = InterfaceFlags(ifaces=("nope",), iface_regexes=("eth1",), iface_can_reach=A("10.9.9.9"))
    assert chosen(flags)[0] == "eth1"
    flags = InterfaceFlags(ifaces=("nope",), iface_regexes=("nope",), iface_can_reach=A("192.168.56.1"))
    assert chosen(flags) == ("eth1", "192.168.56.10", "192.168.56.10")


def test_can_reach_with_no_route_is_an_error_naming_every_attempt() -> None:
    with pytest.raises(InterfaceError) as err:
        choose(InterfaceFlags(ifaces=("wlan9",), iface_can_reach=A("203.0.113.1")), HOST)
    assert "wlan9" in str(err.value) and "203.0.113.1" in str(err.value)


def test_public_ip_alone_picks_the_interface_holding_it() -> None:
    assert chosen(InterfaceFlags(public_ip=IPv4Address("192.168.56.10"))) == (
        "eth1",
        "192.168.56.10",
        "192.168.56.10",
    )
    # flannel exits when no interface holds it; we take the default route's interface (a NAT'ed address)
    assert chosen(InterfaceFlags(public_ip=IPv4Address("203.0.113.7"))) == (
        "eth0",
        "10.0.2.15",
        "203.0.113.7",
    )
    with pytest.raises(InterfaceError, match="no IPv4 default route"):
        choose(InterfaceFlags(public_ip=IPv4Address("203.0.113.7")), host(ETH0, ETH1))


def test_public_ip_with_an_interface_is_what_is_published_the_interface_address_stays_local() -> None:
    flags = InterfaceFlags(
        ifaces=("eth1",), public_ip=IPv4Address("203.0.113.7"), public_ipv6=IPv6Address("2001:db8::7")
    )
    ext = choose(flags, HOST, ipv6=True)
    assert (ext.iface_ipv4, ext.public_ip, ext.iface_ipv6, ext.public_ipv6) == (
        A("192.168.56.10"),
        A("203.0.113.7"),
        A("fd56::10"),
        A("2001:db8::7"),
    )
    assert choose(flags, HOST).public_ipv6 is None  # IPv6 disabled: nothing published for it


def test_usable_addresses_are_ranked_as_flannel_ranks_them() -> None:
    link = Link(
        "eth2",
        4,
        1500,
        (
            Address(A("fe80::2")),
            Address(A("fd01::9"), permanent=False),
            Address(A("fd01::8"), temporary=True),
            Address(A("fd01::7"), deprecated=True),
            Address(A("fd01::6")),
            Address(A("169.254.1.1")),
            Address(A("10.3.3.3"), deprecated=True),
            Address(A("10.4.4.4"), permanent=False),
        ),
    )
    assert [str(a) for a in link.usable(IPv6Address)] == ["fd01::6", "fd01::8", "fd01::9", "fe80::2"]
    assert [str(a) for a in link.usable(IPv4Address)] == ["10.4.4.4", "169.254.1.1"]
    with pytest.raises(InterfaceError, match="lo has no usable IPv4"):
        choose(InterfaceFlags(ifaces=("lo",)), HOST)


# --------------------------------------------------------------------------- the real kernel


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    """Two NICs: the default route on the first, the underlay (and the peer to reach) on the second."""
    with netns() as made:
        for name, address in (("ens3", "10.9.8.7/24"), ("ens4", "192.168.31.5/24")):
            made.ip(
                "link",
                "add",
                name,
                "mtu",
                "1400" if name == "ens4" else "1500",
                "type",
                "veth",
                "peer",
                "name",
                f"{name}p",
            )
            made.ip("addr", "add", address, "dev", name)
            made.ip("link", "set", name, "up")
            made.ip("link", "set", f"{name}p", "up")
        made.ip("route", "add", "default", "via", "10.9.8.1", "dev", "ens3")
        made.ip("route", "add", "172.20.0.0/16", "via", "192.168.31.1", "dev", "ens4")
        yield made


def lookup(ns: Netns, **flags: object) -> dict[str, object]:
    code = (
        "import json, sys; from ipaddress import ip_address as a\n"
        "from lease_service.extiface import InterfaceError, InterfaceFlags, lookup\n"
        "f = json.loads(sys.argv[1])\n"
        "try:\n"
        "    e = lookup(InterfaceFlags(tuple(f.get('iface', ())), tuple(f.get('regex', ())),\n"
        "               a(f['reach']) if f.get('reach') else None, a(f['ip']) if f.get('ip') else None))\n"
        "    print(json.dumps({'name': e.name, 'mtu': e.mtu, 'local': str(e.iface_ipv4), 'public': str(e.public_ip)}))\n"
        "except InterfaceError as e:\n"
        "    print(json.dumps({'error': str(e)}))\n"
    )
    out = subprocess.run(
        [*ns.exec_prefix, sys.executable, "-c", code, json.dumps(flags)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.mark.netns
def test_kernel_default_route_regex_and_can_reach(ns: Netns) -> None:
    assert lookup(ns) == {"name": "ens3", "mtu": 1500, "local": "10.9.8.7", "public": "10.9.8.7"}
    assert lookup(ns, regex=["^192"]) == {
        "name": "ens4",
        "mtu": 1400,
        "local": "192.168.31.5",
        "public": "192.168.31.5",
    }
    assert lookup(ns, reach="172.20.1.1") == {
        "name": "ens4",
        "mtu": 1400,
        "local": "192.168.31.5",
        "public": "192.168.31.5",
    }
    assert lookup(ns, iface=["192.168.31.5"])["name"] == "ens4"
    assert lookup(ns, ip="192.168.31.5")["name"] == "ens4"
    assert "wlan9" in str(lookup(ns, iface=["wlan9"])["error"])
