"""The backend takes the external interface from the lease service and only checks that it sees the same."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from pyroute2 import AsyncIPRoute

from backend_service.kernel.links import link_index
from backend_service.kernel.model import KernelError
from backend_service.kernel.read import check_public_interface, public_interface_from
from backend_service.node import PublicInterface
from proto.flannel.v1 import lease_pb2

from .conftest import TwoNodes

pytestmark = pytest.mark.netns


def test_the_contract_message_is_parsed_once() -> None:
    msg = lease_pb2.ExternalInterface(
        name="eth1",
        index=3,
        mtu=9000,
        iface_ipv4="192.168.9.2",
        iface_ipv6="fd09::2",
        public_ip="203.0.113.9",
    )
    assert public_interface_from(msg) == PublicInterface(
        "eth1", 3, 9000, IPv4Address("192.168.9.2"), IPv6Address("fd09::2")
    )


def test_no_interface_from_the_lease_service_is_refused_by_name() -> None:
    with pytest.raises(KernelError, match="sent no external interface"):
        public_interface_from(lease_pb2.ExternalInterface())
    with pytest.raises(KernelError, match="bad address"):
        public_interface_from(lease_pb2.ExternalInterface(name="eth0", index=2, iface_ipv4="300.1.1.1"))


async def test_an_interface_seen_differently_here_is_refused(two_nodes: TwoNodes) -> None:
    async with AsyncIPRoute(netns=two_nodes.a.name) as ipr:
        index = await link_index(ipr, "eth0")
        assert index is not None
        await check_public_interface(ipr, PublicInterface("eth0", index, 1500))
        with pytest.raises(KernelError, match="same network namespace"):
            await check_public_interface(ipr, PublicInterface("eth0", index + 100, 1500))
        with pytest.raises(KernelError, match="is 'eth0'"):
            await check_public_interface(ipr, PublicInterface("eth9", index, 1500))
