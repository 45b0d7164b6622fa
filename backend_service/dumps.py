"""One dump at a time on a shared netlink socket.

The kernel answers EBUSY to a dump started on a netlink socket while another dump runs on it, and the
backend's tasks (the reconciler's link names, the device watcher's address check, the blackhole routes,
the WireGuard device look-up) share one pyroute2 socket: every dump on it is read to its end under the
socket's lock. (The reconciler's route, neighbour and FDB dumps go over raw sockets of their own.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakKeyDictionary

from pyroute2.iproute.linux import AsyncIPRoute

_locks: WeakKeyDictionary[AsyncIPRoute, asyncio.Lock] = WeakKeyDictionary()


@asynccontextmanager
async def one_dump_at_a_time(ipr: AsyncIPRoute) -> AsyncIterator[None]:
    """Hold ``ipr``'s dump lock (read the whole dump inside)."""
    lock = _locks.get(ipr)
    if lock is None:
        lock = _locks[ipr] = asyncio.Lock()
    async with lock:
        yield
