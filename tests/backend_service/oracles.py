"""Reference implementations, kept in the tests as oracles for the fast production paths.

:func:`read_kernel_pyroute2` reads what we own through pyroute2's parsers (about 10x slower than
:func:`backend_service.kernel.read.read_kernel` at 5,000 peers); :class:`PyrouteApplier` applies ops
one pyroute2 request at a time (the kernel effect :class:`backend_service.kernel.apply.TemplateApplier`
must have).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Iterable, Sequence
from socket import AF_INET, AF_INET6
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from backend_service.desired import RTPROT_FLANNEL, FdbEntry, Neighbour, Route
from backend_service.kernel.links import LinkIndexes, link_names
from backend_service.kernel.model import (
    DELETE,
    ApplyResult,
    KernelError,
    KernelRoute,
    KernelSnapshot,
    KernelState,
    Op,
    OpFailure,
)
from backend_service.kernel.netlink_fast import (
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTNH_F_ONLINK,
)
from backend_service.kernel.read import RT_SCOPE_LINK, RTPROT_KERNEL
from backend_service.node import ConnectedNetwork


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _route_from_msg(msg: Any, links: dict[int, str]) -> Route | None:
    dst_text = _attr(msg, "RTA_DST")
    if dst_text is None or msg["dst_len"] == 0:
        return None
    dst = ipaddress.ip_network(f"{dst_text}/{msg['dst_len']}", strict=False)
    gw_text = _attr(msg, "RTA_GATEWAY")
    gateway = ipaddress.ip_address(gw_text) if gw_text else None
    oif = _attr(msg, "RTA_OIF")
    ifname = links.get(oif, f"if{oif}") if oif is not None else ""
    return Route(dst=dst, gateway=gateway, ifname=ifname, onlink=bool(msg["flags"] & RTNH_F_ONLINK))


async def read_kernel_pyroute2(ipr: AsyncIPRoute, devices: Iterable[str] = ()) -> KernelSnapshot:
    """:func:`read_kernel` through pyroute2's parsers (about 10x slower at 5,000 peers; kept as a reference).

    Ours: main-table routes with protocol RTPROT_FLANNEL, and non-kernel routes, permanent
    neighbours and permanent FDB entries on ``devices`` (our VXLAN devices).
    """
    links = await link_names(ipr)
    device_index = {idx for idx, name in links.items() if name in set(devices)}
    routes: list[KernelRoute] = []
    connected: list[ConnectedNetwork] = []
    for family in (AF_INET, AF_INET6):
        async for msg in await ipr.route("dump", family=family):
            table = _attr(msg, "RTA_TABLE") or msg["table"]
            if table != RT_TABLE_MAIN or msg["type"] != RTN_UNICAST:
                continue
            oif = _attr(msg, "RTA_OIF")
            proto = msg["proto"]
            owned = proto == RTPROT_FLANNEL or (oif in device_index and proto != RTPROT_KERNEL)
            route = _route_from_msg(msg, links)
            if route is None:
                continue
            if owned:
                routes.append(KernelRoute(route, proto=proto, priority=_attr(msg, "RTA_PRIORITY") or 0))
            elif (
                route.gateway is None
                and oif is not None
                and oif not in device_index
                and msg["scope"] == RT_SCOPE_LINK
                and _attr(msg, "RTA_MULTIPATH") is None
                and links.get(oif) not in (None, "lo")
            ):
                connected.append(ConnectedNetwork(route.dst, route.ifname))
    neighbours: set[Neighbour] = set()
    fdb: set[FdbEntry] = set()
    for idx in sorted(device_index):
        ifname = links[idx]
        async for msg in await ipr.neigh("dump", ifindex=idx):
            if msg["ifindex"] != idx or not msg["state"] & NUD_PERMANENT:
                continue
            dst, lladdr = _attr(msg, "NDA_DST"), _attr(msg, "NDA_LLADDR")
            if msg["family"] in (AF_INET, AF_INET6) and dst and lladdr:
                neighbours.add(Neighbour(ifname, ipaddress.ip_address(dst), lladdr.lower()))
        async for msg in await ipr.fdb("dump", ifindex=idx):
            if msg["ifindex"] != idx or not msg["state"] & NUD_PERMANENT:
                continue
            dst, lladdr = _attr(msg, "NDA_DST"), _attr(msg, "NDA_LLADDR")
            if dst and lladdr:
                fdb.add(FdbEntry(ifname, lladdr.lower(), ipaddress.ip_address(dst)))
    state = KernelState(tuple(routes), frozenset(neighbours), frozenset(fdb))
    return KernelSnapshot(state, tuple(connected), links)


def _phases(ops: Sequence[Op]) -> list[list[Op]]:
    """Consecutive runs of the same (action kind, object type): within a run order does not matter."""
    phases: list[list[Op]] = []
    last: tuple[bool, type] | None = None
    for op in ops:
        key = (op.action == DELETE, type(op.obj))
        if key != last:
            phases.append([])
            last = key
        phases[-1].append(op)
    return phases


class PyrouteApplier:
    """Applies ops with ``AsyncIPRoute``, ``concurrency`` requests in flight within each phase.

    Adds and changes use netlink *replace* (idempotent, never a delete + add); deleting
    something already gone counts as done.
    """

    def __init__(self, ipr: AsyncIPRoute, *, concurrency: int = 64) -> None:
        self._ipr = ipr
        self._concurrency = concurrency
        self._indexes = LinkIndexes(ipr)

    async def _one(self, op: Op) -> None:
        obj = op.obj
        ipr = self._ipr
        if isinstance(obj, Route):
            kw: dict[str, Any] = {"dst": str(obj.dst), "table": RT_TABLE_MAIN}
            if obj.ifname:
                kw["oif"] = await self._indexes.get(obj.ifname)
            if obj.gateway is not None:
                kw["gateway"] = str(obj.gateway)
            if op.action == DELETE:
                if op.priority:
                    kw["priority"] = op.priority
                await ipr.route("del", **kw)
            else:
                await ipr.route(
                    "replace", proto=RTPROT_FLANNEL, flags=RTNH_F_ONLINK if obj.onlink else 0, **kw
                )
        elif isinstance(obj, Neighbour):
            idx = await self._indexes.get(obj.ifname)
            if op.action == DELETE:
                await ipr.neigh("del", ifindex=idx, dst=str(obj.dst))
            else:
                await ipr.neigh(
                    "replace", ifindex=idx, dst=str(obj.dst), lladdr=obj.lladdr, state=NUD_PERMANENT
                )
        else:
            assert isinstance(obj, FdbEntry), (
                f"the oracle applies routes, neighbours and FDB entries, not {obj}"
            )
            idx = await self._indexes.get(obj.ifname)
            if op.action == DELETE:
                await ipr.fdb("del", ifindex=idx, lladdr=obj.lladdr, dst=str(obj.dst))
            else:
                await ipr.fdb(
                    "replace",
                    ifindex=idx,
                    lladdr=obj.lladdr,
                    dst=str(obj.dst),
                    state=NUD_PERMANENT | NUD_NOARP,
                    flags=NTF_SELF,
                )

    async def _guarded(self, op: Op, sem: asyncio.Semaphore) -> OpFailure | None:
        async with sem:
            try:
                await self._one(op)
            except NetlinkError as e:
                if op.action == DELETE and e.code in (errno.ENOENT, errno.ESRCH):
                    return None
                return OpFailure(op, f"netlink error {e.code} ({errno.errorcode.get(e.code, '?')}): {e}")
            except (KernelError, OSError, ValueError) as e:
                return OpFailure(op, f"{type(e).__name__}: {e}")
            return None

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        self._indexes.clear()
        sem = asyncio.Semaphore(self._concurrency)
        failures: list[OpFailure] = []
        for phase in _phases(ops):
            results = await asyncio.gather(*(self._guarded(op, sem) for op in phase))
            failures.extend(f for f in results if f is not None)
        return ApplyResult(applied=len(ops) - len(failures), failures=tuple(failures))
