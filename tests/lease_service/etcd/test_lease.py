"""Leases: grant, attach, keep alive, revoke, and expiry seen by a watch."""

from __future__ import annotations

import asyncio

import pytest

from lease_service.etcd import EtcdClient
from tests.lease_service.etcd.conftest import collect, events_of

pytestmark = pytest.mark.etcd


async def test_an_expired_lease_deletes_its_key_and_the_watch_sees_the_delete(
    client: EtcdClient, prefix: str
) -> None:
    lease = await client.grant(1)  # etcd raises it to its minimum TTL (2 s with default timings)
    _, start = await client.get(prefix)
    put_revision = await client.put(f"{prefix}/subnets/10.5.7.0-24", b"{}", lease=lease)
    kv, _ = await client.get(f"{prefix}/subnets/10.5.7.0-24")
    assert kv is not None and kv.lease == lease

    batches = await collect(
        client.watch_prefix(f"{prefix}/", start + 1),
        lambda bs: any(e.type == "delete" for e in events_of(bs)),
        timeout=20,
    )

    events = events_of(batches)
    assert [(e.type, e.kv.key) for e in events] == [
        ("put", f"{prefix}/subnets/10.5.7.0-24"),
        ("delete", f"{prefix}/subnets/10.5.7.0-24"),
    ]
    assert events[1].kv.mod_revision > put_revision
    assert await client.time_to_live(lease) == -1
    assert (await client.get(f"{prefix}/subnets/10.5.7.0-24"))[0] is None


async def test_keepalive_keeps_a_lease_past_its_ttl_and_revoke_ends_it(
    client: EtcdClient, prefix: str
) -> None:
    lease = await client.grant(2)
    await client.put(f"{prefix}/kept", b"x", lease=lease)
    loop = asyncio.get_running_loop()
    until = loop.time() + 3.0  # longer than the TTL
    while loop.time() < until:
        assert await client.keepalive_once(lease) == 2
        await asyncio.sleep(0.5)  # pacing the renewals, not synchronising
    assert 0 < await client.time_to_live(lease) <= 2
    assert (await client.get(f"{prefix}/kept"))[0] is not None

    await client.revoke(lease)
    assert (await client.get(f"{prefix}/kept"))[0] is None
    assert await client.keepalive_once(lease) <= 0
    assert await client.time_to_live(lease) == -1
    await client.revoke(lease)  # revoking a gone lease is fine
