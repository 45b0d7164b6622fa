"""Prefix watches: replay from an old revision, from now, whole revisions per batch, compaction."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from flannel_testkit.etcd import EtcdServer
from lease_service.etcd import EtcdClient, EtcdError, WatchCompacted
from lease_service.etcd.proto import rpc_pb2, rpc_pb2_grpc
from tests.lease_service.etcd.conftest import collect, events_of, fast_settings, reached

pytestmark = pytest.mark.etcd


async def put_many_in_one_revision(etcd: EtcdServer, items: dict[str, bytes]) -> int:
    """Several puts in one transaction: several events with one revision."""
    async with grpc.aio.insecure_channel(etcd.endpoint.removeprefix("http://")) as channel:
        ops = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k.encode(), value=v))
            for k, v in items.items()
        ]
        response = await rpc_pb2_grpc.KVStub(channel).Txn(rpc_pb2.TxnRequest(success=ops))
        return int(response.header.revision)


async def test_watch_from_an_old_revision_replays_exactly_the_history(
    client: EtcdClient, etcd: EtcdServer, prefix: str
) -> None:
    _, start = await client.get(prefix)
    r1 = await client.put(f"{prefix}/a", b"1")
    r2 = await client.put(f"{prefix}/b", b"2")
    r3 = await client.delete(f"{prefix}/a")
    r4 = await put_many_in_one_revision(etcd, {f"{prefix}/c": b"3", f"{prefix}/d": b"4", f"{prefix}/e": b"5"})
    await client.put(f"{prefix}X/outside", b"not under the prefix")
    r5 = await client.put(f"{prefix}/a", b"6")

    batches = await collect(client.watch_prefix(f"{prefix}/", start + 1), reached(r5))

    got = [(e.type, e.kv.key, e.kv.mod_revision, e.kv.value) for e in events_of(batches)]
    assert got == [
        ("put", f"{prefix}/a", r1, b"1"),
        ("put", f"{prefix}/b", r2, b"2"),
        ("delete", f"{prefix}/a", r3, b""),
        ("put", f"{prefix}/c", r4, b"3"),
        ("put", f"{prefix}/d", r4, b"4"),
        ("put", f"{prefix}/e", r4, b"5"),
        ("put", f"{prefix}/a", r5, b"6"),
    ]
    for batch in batches:
        assert not batch.progress
        assert batch.revision == batch.events[-1].kv.mod_revision
        revisions = [e.kv.mod_revision for e in batch.events]
        assert revisions == sorted(revisions)
    # The three events of one transaction arrive together.
    assert any(sum(e.kv.mod_revision == r4 for e in b.events) == 3 for b in batches)


async def test_watch_from_now_sees_only_later_changes(client: EtcdClient, prefix: str) -> None:
    await client.put(f"{prefix}/before", b"old")
    watch = client.watch_prefix(f"{prefix}/", 0)
    first = asyncio.ensure_future(watch.__anext__())
    # The watch is established once etcd has answered; until then a put could race it, so keep
    # writing until the watch has something, then check it saw only "after" keys.
    revisions: list[int] = []
    try:
        while not first.done():
            revisions.append(await client.put(f"{prefix}/after", str(len(revisions)).encode()))
            await asyncio.wait({first}, timeout=0.05)
        batch = first.result()
    finally:
        first.cancel()
        await watch.aclose()
    assert {e.kv.key for e in batch.events} == {f"{prefix}/after"}
    assert {e.kv.mod_revision for e in batch.events} <= set(revisions)


async def test_a_compacted_start_revision_raises_watch_compacted(own_etcd: EtcdServer, prefix: str) -> None:
    async with EtcdClient(fast_settings(own_etcd.endpoint)) as client:
        r1 = await client.put(f"{prefix}/a", b"1")
        r2 = await client.put(f"{prefix}/b", b"2")
        r3 = await client.put(f"{prefix}/c", b"3")
        await client.compact(r2)
        await client.compact(r1)  # compacting an already compacted revision is fine

        with pytest.raises(WatchCompacted) as raised:
            await collect(client.watch_prefix(f"{prefix}/", r1), lambda batches: False)
        assert raised.value.compact_revision == r2
        assert prefix in str(raised.value)

        # The caller's recovery: list again, then watch from the listing's revision + 1.
        kvs, revision = await client.get_prefix(f"{prefix}/")
        assert [kv.key for kv in kvs] == [f"{prefix}/a", f"{prefix}/b", f"{prefix}/c"]
        r4 = await client.put(f"{prefix}/d", b"4")
        batches = await collect(client.watch_prefix(f"{prefix}/", revision + 1), reached(r4))
        assert [(e.kv.key, e.kv.mod_revision) for e in events_of(batches)] == [(f"{prefix}/d", r4)]
        assert r3 <= revision


async def test_closing_the_client_ends_a_running_watch_with_an_error(etcd: EtcdServer, prefix: str) -> None:
    client = EtcdClient(fast_settings(etcd.endpoint))
    revision = await client.put(f"{prefix}/k", b"v")
    watch = client.watch_prefix(f"{prefix}/", revision)
    assert (await watch.__anext__()).revision == revision
    pending = asyncio.ensure_future(watch.__anext__())
    await client.close()
    with pytest.raises(EtcdError, match="closed"):
        await asyncio.wait_for(pending, 10)
