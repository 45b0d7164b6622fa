"""The Node watch read by a thread of its own (``kube_api._WatchReader``), against the test API server (real
etcd): reads held while events come fast still hand on every lease change in order, heartbeats hand on none,
the hub's revision still moves, and a stopped watch leaves no thread behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.kubeapi import AsyncKubeApiControl, KubeApiControl, make_node, running
from flannel_testkit.wait import async_wait_until
from lease_service.netconfig import parse_network_config
from lease_service.stream import LeaseHub
from lease_service.subnet.base import Change
from lease_service.subnet.kube import KubeSubnetManager
from lease_service.subnet.kube_api import EVENT_DECODER, KubeApi
from lease_service.subnet.kube_config import KubeConnection

P = "flannel.alpha.coreos.com/"
CONFIG = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
HOLD = 0.3  # seconds: long, so that the writes below come while a read is held


@pytest.fixture
def api(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[KubeApiControl]:
    with running(etcd.endpoint, prefix, log_path=tmp_path / "apiserver.log") as server:
        server.control.create_node(
            make_node(
                "n1",
                "10.244.1.0/24",
                annotations={
                    P + "kube-subnet-manager": "true",
                    P + "backend-type": "vxlan",
                    P + "public-ip": "192.168.70.9",
                    P + "backend-data": '{"VNI":1}',
                },
            )
        )
        yield server.control


@dataclass
class Watching:
    hub: LeaseHub
    control: AsyncKubeApiControl
    task: asyncio.Task[None]  # the manager's reflector


@pytest.fixture
async def watching(api: KubeApiControl) -> AsyncIterator[Watching]:
    """The manager's reflector running against ``api`` with held reads, its hub ready."""
    manager = KubeSubnetManager(KubeApi(KubeConnection(api.url), watch_hold=HOLD), "n1")
    hub = LeaseHub(manager.store_id)
    task = asyncio.create_task(manager.run_watch(CONFIG, hub))
    try:
        async with asyncio.timeout(10):
            await hub.wait_ready()
        async with AsyncKubeApiControl(api.url) as control:
            yield Watching(hub, control, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await manager.close()


def heartbeat(stamp: int) -> dict[str, object]:
    return {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": f"beat{stamp}"}]}}


async def test_held_reads_hand_on_every_lease_change_in_order_and_heartbeats_none(
    watching: Watching,
) -> None:
    hub, control = watching.hub, watching.control
    changes = hub.subscribe()
    addresses = [f"192.168.70.{10 + i}" for i in range(12)]
    for i, address in enumerate(addresses):
        await control.patch_node("n1", heartbeat(i), status=True)
        await control.patch_node("n1", {"metadata": {"annotations": {P + "public-ip": address}}}, status=True)
        await control.patch_node("n1", heartbeat(100 + i), status=True)
    seen: list[Change] = []
    async with asyncio.timeout(10):
        async for published in changes:
            seen += published
            if len(seen) >= len(addresses):
                break
    assert [lease and str(lease.attrs.public_ip) for _, lease in seen] == addresses
    await asyncio.sleep(HOLD * 2)  # a heartbeat held back would arrive now
    assert changes._queue.empty()


async def test_heartbeats_alone_move_the_hubs_revision_and_publish_nothing(
    watching: Watching,
) -> None:
    hub, control = watching.hub, watching.control
    changes = hub.subscribe()
    before = hub.revision
    await control.patch_node("n1", heartbeat(1), status=True)
    version = int((await control.get_node("n1"))["metadata"]["resourceVersion"])
    assert version > before

    async def reached() -> bool:
        return hub.revision >= version

    await async_wait_until(reached, timeout=5, what="the hub's revision at the heartbeat's")
    assert changes._queue.empty()


async def test_reads_held_while_events_come_fast_are_delivered_in_lists(api: KubeApiControl) -> None:
    # a hold longer than the ten writes take even on a loaded machine: the events after the second share reads
    client = KubeApi(KubeConnection(api.url), watch_hold=1.0)
    version = int(api.get_node("n1")["metadata"]["resourceVersion"])
    batches: list[list[str]] = []

    def on_line(line: bytes | bytearray) -> str | None:
        event = EVENT_DECODER.decode(line)
        return event.object.metadata.resourceVersion if event.type == "MODIFIED" else None

    watch = asyncio.create_task(client.watch_nodes(version, 30, on_line, batches.append))
    try:
        async with AsyncKubeApiControl(api.url) as control:
            written = [
                (await control.patch_node("n1", heartbeat(i), status=True))["metadata"]["resourceVersion"]
                for i in range(10)
            ]

        async def all_delivered() -> bool:
            return sum(len(b) for b in batches) >= len(written)

        await async_wait_until(all_delivered, timeout=10, what="every event delivered")
        assert [v for b in batches for v in b] == written
        assert max(len(b) for b in batches) > 1, batches  # several events shared a read
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await client.close()


async def test_a_stopped_watch_leaves_no_reader_thread(watching: Watching) -> None:
    async def reading() -> bool:
        return any(t.name == "kube-watch" for t in threading.enumerate())

    async def ended() -> bool:
        return not await reading()

    await async_wait_until(reading, timeout=5, what="the watch's reader thread")
    watching.task.cancel()
    await asyncio.gather(watching.task, return_exceptions=True)
    await async_wait_until(ended, timeout=2, what="the reader thread's end")
