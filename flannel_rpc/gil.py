"""The GIL switch interval of both daemons (one home for it)."""

from __future__ import annotations

import sys

SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL while another waits for it (Python's default is 0.005). Each daemon's
loop thread is busy for long stretches at start-up (the lease service converting a listing, the backend
planning), and its helper threads make blocking calls that each give the GIL away and wait for it again:
the lease service's subnet.env write off the loop (mkdir, mkstemp, write, fsync, chmod, rename) took ~200
ms on the path to the backend's own lease at 10,000 leases instead of ~10 ms; the backend's netlink sends
and kernel dumps in threads wait the same way while the next part is planned."""


def hand_over_quickly() -> None:
    """Set :data:`SWITCH_INTERVAL` for this process (before its threads start)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
