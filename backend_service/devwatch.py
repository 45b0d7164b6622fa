"""Watch the backend's own devices through netlink link and address events.

A VXLAN device deleted at runtime (an uplink flap, udev, an operator's ``ip link del``), or its MAC
or address changed, must be repaired at once, not at the next restart or resync: peers keep sending
to the published MAC. :class:`DeviceWatcher` subscribes to ``RTMGRP_LINK`` and the address groups,
and whenever an event names one of the watched devices it waits a moment for the burst to end and
calls back: the caller then checks and repairs (idempotently: its own repairs cause events too, and a
check that finds nothing wrong changes nothing, so this settles).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

log = logging.getLogger(__name__)

SETTLE = 0.05
"""Seconds to wait after an event for the rest of its burst (a deletion comes as several messages)."""

_EVENTS = {"RTM_NEWLINK", "RTM_DELLINK", "RTM_NEWADDR", "RTM_DELADDR"}


class DeviceWatcher:
    """Calls ``on_change()`` once per burst of netlink events touching a device named by ``names()``.

    ``await DeviceWatcher(lambda: {"flannel.1"}).run(repair)`` runs until cancelled (or until
    ``on_change`` raises); its netlink socket lives in this process's network namespace (or ``netns``)
    and is closed on the way out. Events that arrive while ``on_change`` runs (its own repairs among
    them) lead to one more call, which finds nothing to do.
    """

    def __init__(
        self, names: Callable[[], Collection[str]], *, netns: str | None = None, settle: float = SETTLE
    ) -> None:
        self.names = names
        self.netns = netns
        self.settle = settle

    async def run(self, on_change: Callable[[], Awaitable[None]]) -> None:
        kwargs = {"netns": self.netns} if self.netns else {}
        async with AsyncIPRoute(**kwargs) as mon:
            await mon.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
            touched = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(mon, touched))
                while True:
                    await touched.wait()
                    await asyncio.sleep(self.settle)  # the rest of the burst
                    touched.clear()
                    await on_change()

    async def _read(self, mon: AsyncIPRoute, touched: asyncio.Event) -> None:
        ifnames: dict[int, str] = {}  # index -> name, for address events (which carry only the index)
        while True:
            async for msg in mon.get():
                event = msg.get("event")
                if event not in _EVENTS:
                    continue
                index = msg.get("index")
                if event in ("RTM_NEWLINK", "RTM_DELLINK"):
                    name = msg.get_attr("IFLA_IFNAME")
                    if name:
                        ifnames[index] = name
                else:
                    name = msg.get_attr("IFA_LABEL") or ifnames.get(index)
                wanted = self.names()
                # an address event on an index we never saw named may still be ours: a re-check is cheap
                if name in wanted or (name is None and wanted):
                    log.debug("netlink %s on %s", event, name or f"ifindex {index}")
                    touched.set()
