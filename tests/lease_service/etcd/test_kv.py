"""Keys: read, write, list, delete, and the two conditional writes, against a real etcd."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from flannel_testkit.etcd import EtcdServer
from lease_service.etcd import EtcdClient, KeyValue
from lease_service.etcd.proto import rpc_pb2, rpc_pb2_grpc

pytestmark = pytest.mark.etcd


async def test_a_put_key_reads_back_with_its_revisions(client: EtcdClient, prefix: str) -> None:
    revision = await client.put(f"{prefix}/a", b"one")
    kv, read_revision = await client.get(f"{prefix}/a")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (
        f"{prefix}/a",
        b"one",
        revision,
        revision,
        1,
        0,
    )
    assert read_revision >= revision

    second = await client.put(f"{prefix}/a", b"two")
    kv, _ = await client.get(f"{prefix}/a")
    assert kv is not None and (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        b"two",
        revision,
        second,
        2,
    )


async def test_a_missing_key_reads_as_none_with_the_store_revision(client: EtcdClient, prefix: str) -> None:
    revision = await client.put(f"{prefix}/other", b"x")
    kv, read_revision = await client.get(f"{prefix}/missing")
    assert kv is None
    assert read_revision >= revision


async def test_get_prefix_lists_only_the_prefix_sorted_by_key(client: EtcdClient, prefix: str) -> None:
    for name in ("c", "a", "b"):
        await client.put(f"{prefix}/subnets/{name}", name.encode())
    await client.put(f"{prefix}/subnetsX", b"sibling, not under the prefix")
    last = await client.put(f"{prefix}/config", b"{}")

    kvs, revision = await client.get_prefix(f"{prefix}/subnets/")

    assert [kv.key for kv in kvs] == [f"{prefix}/subnets/{n}" for n in ("a", "b", "c")]
    assert [kv.value for kv in kvs] == [b"a", b"b", b"c"]
    assert revision >= last


async def test_get_prefix_returns_more_than_ten_thousand_keys_at_one_revision(
    client: EtcdClient, etcd: EtcdServer, prefix: str
) -> None:
    count = 10_500
    async with grpc.aio.insecure_channel(etcd.endpoint.removeprefix("http://")) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for start in range(0, count, 128):  # etcd allows 128 operations per transaction
            ops = [
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=f"{prefix}/k/{i:06d}".encode(), value=b"v")
                )
                for i in range(start, min(start + 128, count))
            ]
            await kv.Txn(rpc_pb2.TxnRequest(success=ops))

    kvs, revision = await client.get_prefix(f"{prefix}/k/")

    assert [kv.key for kv in kvs] == [f"{prefix}/k/{i:06d}" for i in range(count)]
    assert max(kv.mod_revision for kv in kvs) <= revision


async def test_delete_removes_the_key_and_tolerates_absent_keys(client: EtcdClient, prefix: str) -> None:
    put_revision = await client.put(f"{prefix}/gone", b"x")
    delete_revision = await client.delete(f"{prefix}/gone")
    assert delete_revision > put_revision
    assert (await client.get(f"{prefix}/gone"))[0] is None
    assert await client.delete(f"{prefix}/gone") >= delete_revision


async def test_create_from_ten_racing_tasks_has_exactly_one_winner(client: EtcdClient, prefix: str) -> None:
    key = f"{prefix}/subnets/10.5.1.0-24"
    results = await asyncio.gather(*(client.create(key, f"node-{i}".encode()) for i in range(10)))
    assert results.count(True) == 1
    kv, _ = await client.get(key)
    assert kv is not None and kv.value == f"node-{results.index(True)}".encode()


async def test_create_refuses_an_existing_key(client: EtcdClient, prefix: str) -> None:
    await client.put(f"{prefix}/taken", b"first")
    assert await client.create(f"{prefix}/taken", b"second") is False
    kv, _ = await client.get(f"{prefix}/taken")
    assert kv is not None and kv.value == b"first"


async def test_replace_succeeds_only_at_the_expected_mod_revision(client: EtcdClient, prefix: str) -> None:
    key = f"{prefix}/lease"
    revision = await client.put(key, b"v1")
    assert await client.replace(key, b"v2", mod_revision=revision) is True
    assert await client.replace(key, b"v3", mod_revision=revision) is False  # stale revision
    kv, _ = await client.get(key)
    assert kv is not None and kv.value == b"v2"
    assert await client.replace(f"{prefix}/never-written", b"x", mod_revision=revision) is False


async def test_an_urgent_listing_is_converted_while_the_others_of_the_client_wait(
    client: EtcdClient, etcd: EtcdServer, prefix: str
) -> None:
    """AcquireLease's listing goes before the lease stream's (the backend can plan nothing before its
    lease): once an urgent listing runs, another listing converts no key until it is done; and after
    ``after``, only the keys that sort after it are listed."""
    count = 1_500
    async with grpc.aio.insecure_channel(etcd.endpoint.removeprefix("http://")) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for start in range(0, count, 128):
            ops = [
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=f"{prefix}/k/{i:06d}".encode(), value=b"v")
                )
                for i in range(start, min(start + 128, count))
            ]
            await kv.Txn(rpc_pb2.TxnRequest(success=ops))
    order: list[str] = []
    urgent: list[asyncio.Task[tuple[list[str], int]]] = []

    def background(item: KeyValue) -> None:
        order.append("background")
        if not urgent:
            urgent.append(asyncio.create_task(client.list_prefix(f"{prefix}/k/", in_front, urgent=True)))

    def in_front(item: KeyValue) -> str:
        order.append("urgent")
        return item.key

    await client.list_prefix(f"{prefix}/k/", background)
    keys, _ = await urgent[0]
    assert len(keys) == count and order.count("background") == count
    first, last = order.index("urgent"), len(order) - order[::-1].index("urgent")
    assert order[first:last] == ["urgent"] * count
    assert first < count  # it did not wait for the background listing to end
    rest, _ = await client.list_prefix(f"{prefix}/k/", in_front, after=f"{prefix}/k/{count - 3:06d}")
    assert rest == [f"{prefix}/k/{i:06d}" for i in (count - 2, count - 1)]
