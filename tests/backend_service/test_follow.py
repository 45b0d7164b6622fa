"""The backend's view of the lease stream: snapshots replace the view only when SYNCED."""

from __future__ import annotations

from backend_service.follow import LeaseView
from backend_service.leases import held_message
from proto.flannel.v1 import lease_pb2

Msg = lease_pb2.WatchLeasesResponse
Event = lease_pb2.LeaseEvent


def upsert(key: str) -> Event:
    return Event(type=Event.UPSERT, lease=lease_pb2.Lease(key=key))


def test_a_snapshot_counts_only_once_synced() -> None:
    view = LeaseView()
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a")]))
    view.apply(Msg(kind=Msg.SNAPSHOT, events=[upsert("b")]))
    assert view.leases == {} and not view.synced
    assert view.apply(Msg(kind=Msg.SYNCED, cursor="c1"))
    assert set(view.leases) == {"a", "b"} and view.synced and view.cursor == "c1"


def test_the_first_snapshot_is_handed_out_early_as_it_arrives() -> None:
    view = LeaseView()
    assert view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a"), upsert("b")]))
    assert list(view.take_early(1)) == ["a"]
    assert view.apply(Msg(kind=Msg.SNAPSHOT, events=[upsert("c")]))
    assert list(view.take_early(10)) == ["b", "c"]
    assert view.take_early(10) == {} and view.leases == {}  # the view itself waits for SYNCED


def test_early_leases_of_a_broken_or_restarted_snapshot_are_dropped() -> None:
    view = LeaseView()
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a")]))
    view.interrupted()
    assert view.take_early(10) == {}
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("b")]))
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("c")]))
    assert list(view.take_early(10)) == ["c"]


def test_a_resync_snapshot_is_not_handed_out_early() -> None:
    view = LeaseView()
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a")]))
    view.apply(Msg(kind=Msg.SYNCED, cursor="c1"))
    view.drop_early()
    assert not view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("z")]))
    assert view.take_early(10) == {}


def test_deltas_upsert_and_remove_and_move_the_cursor() -> None:
    view = LeaseView()
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a")]))
    view.apply(Msg(kind=Msg.SYNCED, cursor="c1"))
    assert view.apply(
        Msg(
            kind=Msg.DELTA,
            cursor="c2",
            events=[upsert("b"), Event(type=Event.REMOVE, lease=lease_pb2.Lease(key="a"))],
        )
    )
    assert set(view.leases) == {"b"} and view.cursor == "c2"
    assert not view.apply(Msg(kind=Msg.PROGRESS, cursor="c3"))
    assert view.cursor == "c3"


def test_a_resync_snapshot_keeps_the_old_view_until_synced_and_a_broken_one_is_dropped() -> None:
    view = LeaseView()
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a")]))
    view.apply(Msg(kind=Msg.SYNCED, cursor="c1"))
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("z")]))
    assert set(view.leases) == {"a"}
    view.interrupted()
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("y")]))
    view.apply(Msg(kind=Msg.SYNCED, cursor="c9"))
    assert set(view.leases) == {"y"}


def test_a_resumed_snapshot_keeps_the_lease_held_for_an_unchanged_lease() -> None:
    view = LeaseView()
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a"), upsert("b")]))
    view.apply(Msg(kind=Msg.SYNCED, cursor="c1"))
    held = dict(view.leases)
    changed = Event(type=Event.UPSERT, lease=lease_pb2.Lease(key="b", subnet="10.1.2.0/24"))
    view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a"), changed, upsert("c")]))
    view.apply(Msg(kind=Msg.SYNCED, cursor="c2"))
    assert view.leases["a"] is held["a"]
    assert view.leases["b"] is not held["b"] and held_message(view.leases["b"]).subnet == "10.1.2.0/24"
    assert set(view.leases) == {"a", "b", "c"}


def test_a_held_lease_shares_nothing_with_the_stream_message_it_came_in() -> None:
    # a lease message taken out of a stream message is a view into the stream message's memory, which it
    # keeps alive (a snapshot part of 500 leases, or a delta per lease); the view holds its own copy
    view = LeaseView()
    snapshot = Msg(kind=Msg.SNAPSHOT, reset=True, events=[upsert("a"), upsert("b")])
    delta = Msg(kind=Msg.DELTA, cursor="c2", events=[upsert("c")])
    view.apply(snapshot)
    early = view.take_early(10)
    view.apply(Msg(kind=Msg.SYNCED, cursor="c1"))
    assert view.take_changes() is None  # the snapshot replaced the view
    view.apply(delta)
    changes = view.take_changes()
    for msg in (snapshot, delta):
        for event in msg.events:
            event.lease.subnet = "10.9.9.0/24"
    assert {key: held_message(lease).subnet for key, lease in view.leases.items()} == dict.fromkeys("abc", "")
    assert [held_message(lease).subnet for lease in early.values()] == ["", ""]
    assert changes is not None and held_message(changes["c"] or b"").subnet == ""
