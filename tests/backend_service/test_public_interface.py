"""Finding the underlay: the named interface, or the default route's, and its public addresses."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from pyroute2 import AsyncIPRoute

from backend_service.kernel import KernelError, read_public_interface

from .conftest import TwoNodes

pytestmark = pytest.mark.netns


async def test_public_interface_by_name_or_default_route(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with AsyncIPRoute(netns=ns.name) as ipr:
        named = await read_public_interface(ipr, "eth0", ipv6=True)
        assert (named.ifname, named.ipv4, named.ipv6, named.mtu) == (
            "eth0",
            ip_address("192.168.77.1"),
            ip_address("fd77::1"),
            1500,
        )
        with pytest.raises(KernelError, match="no default route"):
            await read_public_interface(ipr)
        ns.ip("route", "add", "default", "via", "192.168.77.2", "dev", "eth0")
        assert await read_public_interface(ipr, ipv6=True) == named
        with pytest.raises(KernelError, match="'nosuch0' does not exist"):
            await read_public_interface(ipr, "nosuch0")
        with pytest.raises(KernelError, match="no global IPv4 address"):
            await read_public_interface(ipr, "pod0p")
