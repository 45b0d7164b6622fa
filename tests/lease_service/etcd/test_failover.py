"""etcd going away: killed mid-watch, down during a call, a dead first endpoint."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from flannel_testkit.etcd import EtcdServer, free_port
from flannel_testkit.wait import async_wait_until
from lease_service.etcd import EtcdClient, EtcdUnavailable, WatchBatch
from tests.lease_service.etcd.conftest import collect, events_of, fast_settings, polled, reached

pytestmark = pytest.mark.etcd


async def test_a_watch_survives_sigkill_and_restart_with_every_revision_exactly_once(
    own_etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lease_service.etcd")
    settings = fast_settings(own_etcd.endpoint)
    async with EtcdClient(settings) as watcher_client, EtcdClient(settings) as writer_client:
        _, start = await watcher_client.get(prefix)
        seen: list[WatchBatch] = []
        written: list[int] = []
        stop = asyncio.Event()

        async def watch() -> None:
            async for batch in watcher_client.watch_prefix(f"{prefix}/", start + 1):
                seen.append(batch)

        async def write() -> None:
            i = 0
            while not stop.is_set():
                try:
                    written.append(await writer_client.put(f"{prefix}/{i:05d}", b"v"))
                    i += 1
                except EtcdUnavailable:
                    pass  # etcd is down; the put may or may not have been applied
                await asyncio.sleep(0.002)

        watch_task = asyncio.create_task(watch())
        write_task = asyncio.create_task(write())
        try:
            await async_wait_until(polled(lambda: len(events_of(seen)) >= 30), what="events before the kill")
            await asyncio.to_thread(own_etcd.kill)
            await asyncio.to_thread(own_etcd.start)
            before = len(written)
            await async_wait_until(
                polled(lambda: len(written) >= before + 30), timeout=20, what="writes after restart"
            )
            stop.set()
            await write_task
            _, last = await writer_client.get(prefix)
            await async_wait_until(
                polled(lambda: reached(last)(seen)), timeout=20, what=f"the watch to reach {last}"
            )
        finally:
            stop.set()
            watch_task.cancel()
            write_task.cancel()
            await asyncio.gather(watch_task, write_task, return_exceptions=True)

        # etcd's own history, replayed by a fresh watch that never saw a restart.
        history = events_of(
            await collect(watcher_client.watch_prefix(f"{prefix}/", start + 1), reached(last))
        )
        got = [(e.kv.mod_revision, e.kv.key) for e in events_of(seen)]
        assert got == [(e.kv.mod_revision, e.kv.key) for e in history]
        assert len(got) == len(set(got))
        assert set(written) <= {rev for rev, _ in got}
        # The stream really broke and was resumed (not, say, served from a buffer).
        assert any("broken" in r.getMessage() for r in caplog.records)
        assert any("resumed" in r.getMessage() for r in caplog.records)


async def test_a_call_while_etcd_is_down_raises_unavailable_within_the_budget_then_works_again(
    own_etcd: EtcdServer, prefix: str
) -> None:
    settings = fast_settings(own_etcd.endpoint, call_timeout=0.5, retry_budget=1.5)
    async with EtcdClient(settings) as client:
        await client.put(f"{prefix}/k", b"v")
        own_etcd.kill()

        began = time.monotonic()
        with pytest.raises(EtcdUnavailable) as raised:
            await client.get(f"{prefix}/k")
        # within the budget, with slack for a loop that waits for the CPU (load 20 on 2 cores here): the
        # bound tells a client that gives up from one that retries on
        assert time.monotonic() - began < 1.5 + 10.0
        assert own_etcd.endpoint in str(raised.value)
        assert f"{prefix}/k" in str(raised.value)

        await asyncio.to_thread(own_etcd.start)
        kv, _ = await client.get(f"{prefix}/k")
        assert kv is not None and kv.value == b"v"


async def test_a_dead_first_endpoint_is_skipped_for_calls_and_watches(etcd: EtcdServer, prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient(fast_settings(dead, etcd.endpoint)) as client:
        revision = await client.put(f"{prefix}/k", b"v")
        kv, _ = await client.get(f"{prefix}/k")
        assert kv is not None and kv.mod_revision == revision
        batches = await collect(client.watch_prefix(f"{prefix}/", revision), reached(revision))
        assert [e.kv.key for e in events_of(batches)] == [f"{prefix}/k"]


async def test_a_watch_started_while_etcd_is_down_delivers_once_it_is_back(
    own_etcd: EtcdServer, prefix: str
) -> None:
    async with EtcdClient(fast_settings(own_etcd.endpoint)) as client:
        revision = await client.put(f"{prefix}/k", b"v")
        own_etcd.kill()
        watch = client.watch_prefix(f"{prefix}/", revision)
        first = asyncio.ensure_future(watch.__anext__())
        try:
            await asyncio.to_thread(own_etcd.start)
            batch = await asyncio.wait_for(first, 15)
        finally:
            first.cancel()
            await watch.aclose()
        assert [(e.kv.key, e.kv.mod_revision) for e in batch.events] == [(f"{prefix}/k", revision)]
