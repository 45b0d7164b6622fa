"""`flannelctl watch` prints a PROGRESS marker only when its cursor moved, or every one with -v."""

from __future__ import annotations

from flannelctl.watch import worth_printing


def test_an_idle_streams_progress_is_printed_once_per_cursor() -> None:
    progress = {"time": "t", "kind": "PROGRESS", "cursor": "c7"}
    assert worth_printing(progress, "c6", verbose=False)  # the cursor moved
    assert not worth_printing(progress, "c7", verbose=False)  # the same line again: not printed
    assert worth_printing(progress, "c7", verbose=True)
    assert worth_printing({"time": "t", "kind": "SYNCED", "cursor": "c7"}, "c7", verbose=False)
    assert worth_printing({"time": "t", "kind": "UPSERT", "key": "k", "cursor": "c7"}, "c7", verbose=False)
