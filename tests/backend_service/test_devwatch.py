"""The device watcher calls back once per burst of link/address events on a watched device, never for
events on other devices."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from backend_service.devwatch import DeviceWatcher
from flannel_testkit.netns import netns
from flannel_testkit.wait import async_wait_until

pytestmark = pytest.mark.netns


async def test_events_on_watched_devices_call_back_and_others_do_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with netns() as ns, caplog.at_level(logging.DEBUG, logger="backend_service.devwatch"):
        ns.ip("link", "add", "flannel.9", "type", "veth", "peer", "name", "other0")
        calls: list[float] = []

        async def on_change() -> None:
            calls.append(asyncio.get_running_loop().time())

        watcher = DeviceWatcher(lambda: {"flannel.9"}, netns=ns.name, settle=0.02)
        task = asyncio.create_task(watcher.run(on_change))
        mtus = itertools.cycle(("1400", "1450"))

        async def subscribed() -> bool:
            # the watcher binds its netlink socket some time after it starts: poke until it answers
            if not calls:
                await asyncio.to_thread(ns.ip, "link", "set", "flannel.9", "mtu", next(mtus))
            return bool(calls)

        def events_on(name: str) -> list[str]:
            return [r.getMessage() for r in caplog.records if r.getMessage().endswith(f" on {name}")]

        try:
            await async_wait_until(subscribed, timeout=30, interval=0.2, what="the watcher's first call")
            caplog.clear()
            # an event on another device, then one on ours: netlink delivers them in this order, so
            # once ours is seen the other one was read too, and it touched nothing
            await asyncio.to_thread(ns.ip, "link", "set", "other0", "mtu", "1300")
            seen = len(calls)
            await asyncio.to_thread(ns.ip, "addr", "add", "10.9.9.9/32", "dev", "flannel.9")
            await async_wait_until(lambda: asyncio.sleep(0, len(calls) > seen), timeout=30, what="a call")
            assert events_on("flannel.9") and not events_on("other0"), caplog.text
            seen = len(calls)
            await asyncio.to_thread(ns.ip, "link", "del", "flannel.9")
            await async_wait_until(
                lambda: asyncio.sleep(0, len(calls) > seen), timeout=30, what="another call"
            )
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
