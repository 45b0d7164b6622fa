"""``--ip-blackhole-route``: a blackhole route for the node's own subnet(s), as flannel adds it.

flannel (``main.go``) adds ``blackhole <subnet>`` for the lease's IPv4 and IPv6 subnets every
``--iptables-resync`` seconds when it is missing, so that traffic to an unused address of the node's
subnet is dropped instead of following the default route out (when no bridge route covers the
subnet, e.g. Canal). Ours carries route protocol 70 like every route the backend makes, and the
highest metric: it is a last resort that never shadows a route to the same subnet (flannel's IPv4 one
has metric 0 and hides a ``cni0`` route added after it). Adding an existing route is a no-op.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from typing import Any

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .desired import RTPROT_FLANNEL, IPNetwork
from .dumps import one_dump_at_a_time

log = logging.getLogger(__name__)

BLACKHOLE_METRIC = 0xFFFFFFFF
RT_TABLE_MAIN = 254
RTN_BLACKHOLE = 6


async def ensure_blackholes(ipr: AsyncIPRoute, subnets: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Add ``blackhole <subnet> proto 70 metric 4294967295`` for each subnet that lacks it; the ones added."""
    added = []
    for subnet in subnets:
        try:
            await ipr.route(
                "add",
                dst=str(subnet),
                type="blackhole",
                proto=RTPROT_FLANNEL,
                priority=BLACKHOLE_METRIC,
                table=RT_TABLE_MAIN,
            )
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
            continue
        log.info("added blackhole route %s", subnet)
        added.append(subnet)
    return added


async def remove_blackholes(ipr: AsyncIPRoute) -> list[str]:
    """Delete every blackhole route of ours (protocol 70, main table); their destinations. Explicit cleanup only."""
    removed = []
    for family in (2, 10):  # AF_INET, AF_INET6
        for route in await _dump(ipr, family):
            if route.get("proto") != RTPROT_FLANNEL or route.get("type") != RTN_BLACKHOLE:
                continue
            if route.get_attr("RTA_TABLE", route.get("table")) != RT_TABLE_MAIN:
                continue
            dst = f"{route.get_attr('RTA_DST')}/{route.get('dst_len')}"
            await ipr.route(
                "del",
                dst=dst,
                type="blackhole",
                proto=RTPROT_FLANNEL,
                table=RT_TABLE_MAIN,
                priority=route.get_attr("RTA_PRIORITY", 0),
            )
            removed.append(dst)
    return removed


async def _dump(ipr: AsyncIPRoute, family: int) -> list[Any]:
    async with one_dump_at_a_time(ipr):
        return [msg async for msg in await ipr.route("dump", family=family)]
