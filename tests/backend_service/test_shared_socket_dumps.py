"""The backend's tasks share one pyroute2 socket, and the kernel refuses (EBUSY) a dump started on a
socket while another dump runs on it: found as a device watcher repair failing under load."""

from __future__ import annotations

import asyncio
import ipaddress

from pyroute2.iproute.linux import AsyncIPRoute

from backend_service.blackhole import ensure_blackholes
from backend_service.kernel.links import ensure_address, link_index, link_names
from flannel_testkit.netns import Netns


async def test_dumps_from_several_tasks_on_one_socket_never_collide(one_node: Netns) -> None:
    for n in range(20):  # dumps long enough to overlap
        one_node.ip("link", "add", f"v{n}", "type", "veth", "peer", "name", f"w{n}")
    async with AsyncIPRoute(netns=one_node.name) as ipr:
        index = await link_index(ipr, "v0")
        assert index is not None

        async def names() -> None:
            for _ in range(100):
                assert "w19" in (await link_names(ipr)).values()

        async def address() -> None:
            for _ in range(100):
                await ensure_address(ipr, index, ipaddress.ip_address("10.9.0.0"))

        async def lookups() -> None:
            for _ in range(100):
                assert await link_index(ipr, "w7") is not None

        async def blackholes() -> None:
            for _ in range(50):
                await ensure_blackholes(ipr, [ipaddress.ip_network("10.9.0.0/16")])

        await asyncio.gather(names(), address(), lookups(), blackholes())
