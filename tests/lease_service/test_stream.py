"""The lease stream's contract, on the hub alone: snapshot then SYNCED, deltas, resume by cursor,
typed resyncs, no duplicate removals, slow watchers cut loose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from lease_service.lease import Lease, LeaseAttrs
from lease_service.stream import HubSettings, LeaseHub
from proto.flannel.v1 import lease_pb2

Msg = lease_pb2.WatchLeasesResponse
UPSERT, REMOVE = lease_pb2.LeaseEvent.UPSERT, lease_pb2.LeaseEvent.REMOVE


def lease(n: int, ip: str = "") -> Lease:
    key = f"10.244.{n}.0-24"
    return Lease(
        key=key,
        subnet=IPv4Network(f"10.244.{n}.0/24"),
        ipv6_subnet=None,
        attrs=LeaseAttrs(IPv4Address(ip or f"192.168.0.{n}"), backend_type="vxlan"),
    )


async def take_raw(stream: AsyncIterator[bytes], count: int) -> list[bytes]:
    return [await asyncio.wait_for(anext(stream), 5) for _ in range(count)]


async def take(stream: AsyncIterator[bytes], count: int) -> list[Msg]:
    """The next ``count`` messages (the hub yields them in wire form)."""
    return [Msg.FromString(raw) for raw in await take_raw(stream, count)]


def keys(msg: Msg) -> list[tuple[int, str]]:
    return [(e.type, e.lease.key) for e in msg.events]


async def test_a_new_watcher_gets_a_snapshot_in_batches_then_synced() -> None:
    hub = LeaseHub("test")
    hub.reset({lease(n).key: lease(n) for n in range(1, 6)}, revision=10)
    msgs = await take(hub.watch(max_batch=2), 4)
    assert [m.kind for m in msgs] == [Msg.SNAPSHOT, Msg.SNAPSHOT, Msg.SNAPSHOT, Msg.SYNCED]
    assert [m.reset for m in msgs[:3]] == [True, False, False]
    assert msgs[0].reason == Msg.INITIAL
    assert sum(len(m.events) for m in msgs[:3]) == 5
    assert hub.parse_cursor(msgs[-1].cursor)[0] == 10


async def test_an_empty_store_still_sends_a_reset_and_synced() -> None:
    hub = LeaseHub("test")
    hub.reset({}, revision=3)
    msgs = await take(hub.watch(), 2)
    assert (msgs[0].kind, msgs[0].reset, len(msgs[0].events), msgs[1].kind) == (
        Msg.SNAPSHOT,
        True,
        0,
        Msg.SYNCED,
    )


async def test_changes_arrive_as_deltas_and_a_removal_is_sent_once() -> None:
    hub = LeaseHub("test")
    hub.reset({lease(1).key: lease(1)}, revision=1)
    stream = hub.watch()
    await take(stream, 2)
    hub.apply([(lease(2).key, lease(2))], revision=2)
    hub.apply([(lease(1).key, None), (lease(9).key, None)], revision=3)  # 9 was never there
    hub.apply([(lease(1).key, None)], revision=4)  # already gone
    hub.apply([(lease(3).key, lease(3))], revision=5)
    msgs = await take(stream, 1)  # queued while the watcher was not reading: joined in one message
    assert msgs[0].kind == Msg.DELTA
    assert keys(msgs[0]) == [(UPSERT, "10.244.2.0-24"), (REMOVE, "10.244.1.0-24"), (UPSERT, "10.244.3.0-24")]
    assert hub.parse_cursor(msgs[0].cursor)[0] == 5
    assert msgs[0].events[1].lease.subnet == "10.244.1.0/24"  # a removal says what is removed
    hub.apply([(lease(4).key, lease(4))], revision=6)
    msg = (await take(stream, 1))[0]
    assert keys(msg) == [(UPSERT, "10.244.4.0-24")] and hub.parse_cursor(msg.cursor)[0] == 6


async def test_queued_deltas_are_joined_up_to_max_batch_and_a_revision_is_never_split() -> None:
    hub = LeaseHub("test")
    hub.reset({}, revision=1)
    stream = hub.watch(max_batch=3)
    await take(stream, 2)
    hub.apply([(lease(n).key, lease(n)) for n in (1, 2)], revision=2)
    hub.apply([(lease(3).key, lease(3))], revision=3)
    hub.apply([(lease(n).key, lease(n)) for n in (4, 5, 6, 7)], revision=4)  # more than max_batch alone
    hub.apply([(lease(8).key, lease(8))], revision=5)
    msgs = await take(stream, 3)
    assert [[key for _, key in keys(m)] for m in msgs] == [
        [f"10.244.{n}.0-24" for n in (1, 2, 3)],
        [f"10.244.{n}.0-24" for n in (4, 5, 6, 7)],
        ["10.244.8.0-24"],
    ]
    assert [hub.parse_cursor(m.cursor)[0] for m in msgs] == [3, 4, 5]


async def test_a_cursor_resumes_from_memory_without_a_snapshot() -> None:
    hub = LeaseHub("test")
    hub.reset({}, revision=1)
    hub.apply([(lease(1).key, lease(1))], revision=2)
    cursor = hub.cursor(2)
    hub.apply([(lease(2).key, lease(2))], revision=3)
    hub.apply([(lease(1).key, None)], revision=4)
    msgs = await take(hub.watch(cursor), 3)
    assert [m.kind for m in msgs] == [Msg.DELTA, Msg.DELTA, Msg.PROGRESS]
    assert keys(msgs[0]) == [(UPSERT, "10.244.2.0-24")] and keys(msgs[1]) == [(REMOVE, "10.244.1.0-24")]
    assert hub.parse_cursor(msgs[2].cursor)[0] == 4


@pytest.mark.parametrize(
    "cursor", ["garbage!", LeaseHub("other-store").cursor(1), LeaseHub("test").cursor(99)]
)
async def test_a_foreign_malformed_or_future_cursor_gets_a_typed_snapshot(cursor: str) -> None:
    hub = LeaseHub("test")
    hub.reset({lease(1).key: lease(1)}, revision=5)
    first = (await take(hub.watch(cursor), 1))[0]
    assert (first.kind, first.reset, first.reason) == (Msg.SNAPSHOT, True, Msg.CURSOR_INVALID)


async def test_a_cursor_older_than_memory_is_resumed_by_diffing_the_stores_old_state() -> None:
    old_state = {lease(n).key: LeaseHub.comparable(lease(n)) for n in (1, 2)}
    hub = LeaseHub("test")
    hub.reset({lease(2).key: lease(2), lease(4).key: lease(4)}, revision=7)
    assert hub.beyond_memory(hub.cursor(3)) == 3
    msg = (await take(hub.watch(hub.cursor(3), old_state=old_state), 1))[0]
    assert msg.kind == Msg.DELTA
    assert sorted(keys(msg)) == [(UPSERT, "10.244.4.0-24"), (REMOVE, "10.244.1.0-24")]


async def test_a_compacted_cursor_gets_a_snapshot_marked_compacted() -> None:
    hub = LeaseHub("test")
    hub.reset({lease(1).key: lease(1)}, revision=7)
    first = (await take(hub.watch(hub.cursor(3)), 1))[0]  # the store's state at 3 could not be read
    assert (first.kind, first.reason) == (Msg.SNAPSHOT, Msg.CURSOR_COMPACTED)


async def test_a_relist_publishes_only_the_difference() -> None:
    hub = LeaseHub("test")
    hub.reset({lease(1).key: lease(1), lease(2).key: lease(2)}, revision=1)
    stream = hub.watch()
    await take(stream, 2)
    hub.reset({lease(2).key: lease(2), lease(3).key: lease(3)}, revision=9)
    msg = (await take(stream, 1))[0]
    assert sorted(keys(msg)) == [(UPSERT, "10.244.3.0-24"), (REMOVE, "10.244.1.0-24")]


async def test_a_slow_watcher_gets_a_fresh_snapshot_and_never_stalls_the_others() -> None:
    hub = LeaseHub("test", HubSettings(buffer_events=3))
    hub.reset({}, revision=1)
    slow, fast = hub.watch(), hub.watch()
    await take(slow, 2)
    await take(fast, 2)
    for n in range(1, 6):
        hub.apply([(lease(n).key, lease(n))], revision=n + 1)
        assert len(keys((await take(fast, 1))[0])) == 1
    msgs = await take(slow, 2)
    assert (msgs[0].kind, msgs[0].reset, msgs[0].reason) == (Msg.SNAPSHOT, True, Msg.FELL_BEHIND)
    assert len(msgs[0].events) == 5 and msgs[1].kind == Msg.SYNCED


async def test_an_idle_stream_sends_progress_with_a_fresh_cursor() -> None:
    hub = LeaseHub("test", HubSettings(progress_interval=0.05))
    hub.reset({}, revision=1)
    stream = hub.watch()
    await take(stream, 2)
    hub.progress(42)
    msg = (await take(stream, 1))[0]
    assert msg.kind == Msg.PROGRESS and hub.parse_cursor(msg.cursor)[0] == 42


async def test_an_unchanged_lease_rewritten_is_not_streamed_again() -> None:
    hub = LeaseHub("test", HubSettings(progress_interval=0.05))
    hub.reset({lease(1).key: lease(1)}, revision=1)
    stream = hub.watch()
    await take(stream, 2)
    hub.apply([(lease(1).key, lease(1))], revision=2)
    msg = (await take(stream, 1))[0]
    assert msg.kind == Msg.PROGRESS


async def test_watchers_at_the_same_state_share_the_snapshot_and_a_change_refreshes_it() -> None:
    hub = LeaseHub("test")
    hub.reset({lease(n).key: lease(n) for n in range(1, 6)}, revision=1)
    one_raw = await take_raw(hub.watch(max_batch=2), 4)
    two_raw = await take_raw(hub.watch("garbage", max_batch=2), 4)
    assert one_raw[1] is two_raw[1] and one_raw[2] is two_raw[2]  # shared
    one, two = [Msg.FromString(m) for m in one_raw], [Msg.FromString(m) for m in two_raw]
    assert (
        (one[0].reason, two[0].reason) == (Msg.INITIAL, Msg.CURSOR_INVALID) and one[0].reset and two[0].reset
    )
    assert not one[1].reset
    hub.apply([(lease(9).key, lease(9))], revision=2)
    three_raw = await take_raw(hub.watch(max_batch=2), 4)
    assert three_raw[1] is not one_raw[1]
    three = [Msg.FromString(m) for m in three_raw]
    assert "10.244.9.0-24" in {e.lease.key for m in three[:3] for e in m.events}


async def test_a_listing_handed_on_lease_by_lease_is_the_next_reset_and_a_restart_forgets_it() -> None:
    hub = LeaseHub("test")
    hub.listed(lease(7).key, lease(7))
    hub.discard_listed()  # the listing started over: 7 was deleted meanwhile
    for n in (1, 2):
        hub.listed(lease(n).key, lease(n))
    hub.reset({lease(3).key: lease(3)}, revision=4)
    msgs = await take(hub.watch(), 2)
    assert sorted(key for _, key in keys(msgs[0])) == ["10.244.1.0-24", "10.244.2.0-24", "10.244.3.0-24"]
    assert msgs[1].kind == Msg.SYNCED and hub.parse_cursor(msgs[1].cursor)[0] == 4


async def test_a_relist_lease_by_lease_publishes_the_difference_with_whole_leases_to_subscribers() -> None:
    hub = LeaseHub("test")
    hub.reset({lease(n).key: lease(n) for n in (1, 2, 3)}, revision=1)
    changes = hub.subscribe()
    stream = hub.watch()
    await take(stream, 2)
    moved = lease(2, ip="192.168.9.9")
    for one in (lease(1), moved, lease(4)):
        hub.listed(one.key, one)
    hub.reset({}, revision=9)
    msg = (await take(stream, 1))[0]
    assert sorted(keys(msg)) == [
        (UPSERT, "10.244.2.0-24"),
        (UPSERT, "10.244.4.0-24"),
        (REMOVE, "10.244.3.0-24"),
    ]
    assert sorted(await asyncio.wait_for(anext(changes), 5), key=lambda c: c[0]) == [
        ("10.244.2.0-24", moved),
        ("10.244.3.0-24", None),
        ("10.244.4.0-24", lease(4)),
    ]


async def test_a_watcher_gets_the_first_listing_as_it_is_listed_then_synced_at_its_revision() -> None:
    hub = LeaseHub("test")
    stream = hub.watch(max_batch=2)
    for n in (1, 2, 3):
        hub.listed(lease(n).key, lease(n))
    first = await take(stream, 2)  # before the listing is complete
    assert [(m.kind, m.reset) for m in first] == [(Msg.SNAPSHOT, True), (Msg.SNAPSHOT, False)]
    assert first[0].reason == Msg.INITIAL
    assert [key for m in first for _, key in keys(m)] == ["10.244.1.0-24", "10.244.2.0-24", "10.244.3.0-24"]
    hub.listed(lease(4).key, lease(4))
    hub.reset({}, revision=5)
    hub.apply([(lease(1).key, None)], revision=6)  # before the watcher ran again: it must not miss it
    rest = await take(stream, 3)
    assert (rest[0].kind, rest[0].reset, keys(rest[0])) == (Msg.SNAPSHOT, False, [(UPSERT, "10.244.4.0-24")])
    assert rest[1].kind == Msg.SYNCED and hub.parse_cursor(rest[1].cursor)[0] == 5
    assert (rest[2].kind, keys(rest[2])) == (Msg.DELTA, [(REMOVE, "10.244.1.0-24")])
    hub.apply([(lease(9).key, lease(9))], revision=7)
    assert keys((await take(stream, 1))[0]) == [(UPSERT, "10.244.9.0-24")]


async def test_a_watcher_that_comes_during_the_first_listing_gets_what_was_listed_before_it() -> None:
    hub = LeaseHub("test")
    for n in (1, 2):
        hub.listed(lease(n).key, lease(n))
    stream = hub.watch()
    msg = (await take(stream, 1))[0]
    assert (msg.reset, sorted(key for _, key in keys(msg))) == (True, ["10.244.1.0-24", "10.244.2.0-24"])
    hub.reset({}, revision=3)
    assert (await take(stream, 1))[0].kind == Msg.SYNCED


async def test_a_first_listing_that_starts_over_starts_the_snapshot_over() -> None:
    hub = LeaseHub("test")
    stream = hub.watch()
    hub.listed(lease(7).key, lease(7))
    assert keys((await take(stream, 1))[0]) == [(UPSERT, "10.244.7.0-24")]
    hub.discard_listed()  # compacted while paging: listed again from the start, 7 deleted meanwhile
    hub.listed(lease(1).key, lease(1))
    again = (await take(stream, 1))[0]
    assert (again.kind, again.reset, again.reason, keys(again)) == (
        Msg.SNAPSHOT,
        True,
        Msg.STORE_RESYNC,
        [(UPSERT, "10.244.1.0-24")],
    )
    hub.discard_listed()  # and once more, this time completed before the watcher ran
    hub.listed(lease(2).key, lease(2))
    hub.reset({}, revision=9)
    final = await take(stream, 2)
    assert (final[0].reset, final[0].reason, keys(final[0])) == (
        True,
        Msg.STORE_RESYNC,
        [(UPSERT, "10.244.2.0-24")],
    )
    assert final[1].kind == Msg.SYNCED and hub.parse_cursor(final[1].cursor)[0] == 9


async def test_a_watcher_with_a_cursor_waits_for_the_first_listing() -> None:
    hub = LeaseHub("test")
    hub.listed(lease(1).key, lease(1))
    stream = hub.watch(
        cursor=hub.cursor(2)
    )  # the revision the listing will be at: nothing to send but PROGRESS
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not pending.done()
    hub.reset({}, revision=2)
    assert Msg.FromString(await asyncio.wait_for(pending, 5)).kind == Msg.PROGRESS


def test_known_while_the_first_listing_runs_is_what_it_listed_so_far_and_where_it_stopped() -> None:
    hub = LeaseHub("test")
    assert hub.known() is None
    for n in (1, 2, 3):
        hub.listed(lease(n).key, lease(n))
    partial = hub.known()
    assert partial is not None and partial.after == lease(3).key
    assert list(partial.leases) == [lease(n).key for n in (1, 2, 3)]
    hub.discard_listed()  # the listing starts over (compacted while paging): nothing is known again
    assert hub.known() is None
    for n in (1, 2, 3, 4):
        hub.listed(lease(n).key, lease(n))
    hub.reset({}, revision=9)
    whole = hub.known()
    assert (
        whole is not None
        and whole.after is None
        and sorted(whole.leases) == sorted(lease(n).key for n in (1, 2, 3, 4))
    )
