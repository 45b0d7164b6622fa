"""The device watcher calls back once per burst of link/address events on a watched device, never for
events on other devices."""

from __future__ import annotations

import asyncio

import pytest

from backend_service.devwatch import DeviceWatcher
from flannel_testkit.netns import netns
from flannel_testkit.wait import async_wait_until

pytestmark = pytest.mark.netns


async def test_events_on_watched_devices_call_back_and_others_do_not() -> None:
    with netns() as ns:
        ns.ip("link", "add", "flannel.9", "type", "veth", "peer", "name", "other0")
        calls: list[float] = []

        async def on_change() -> None:
            calls.append(asyncio.get_running_loop().time())

        watcher = DeviceWatcher(lambda: {"flannel.9"}, netns=ns.name, settle=0.02)
        task = asyncio.create_task(watcher.run(on_change))
        try:
            await asyncio.sleep(0.3)  # subscribed
            await asyncio.to_thread(ns.ip, "link", "set", "other0", "mtu", "1400")
            await asyncio.sleep(0.3)
            assert calls == []
            await asyncio.to_thread(ns.ip, "addr", "add", "10.9.9.9/32", "dev", "flannel.9")
            await async_wait_until(lambda: asyncio.sleep(0, len(calls) >= 1), timeout=5, what="a call")
            seen = len(calls)
            await asyncio.to_thread(ns.ip, "link", "del", "flannel.9")
            await async_wait_until(
                lambda: asyncio.sleep(0, len(calls) > seen), timeout=5, what="another call"
            )
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
