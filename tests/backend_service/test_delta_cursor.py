"""A delta reports the cursor of the changes it applied, not one the stream reached while it was applied."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from backend_service.follow import LeaseView
from backend_service.kernel.model import ApplyResult, Op
from backend_service.status import Status
from flannel_testkit.wait import async_wait_until
from proto.flannel.v1 import lease_pb2

from .factory import lease, node
from .fakes import FakeKernel, bare_reconciler

Msg = lease_pb2.WatchLeasesResponse
Event = lease_pb2.LeaseEvent


class HeldKernel(FakeKernel):
    """A fake kernel whose applies wait, once :attr:`hold` is set, until :attr:`release` is set; each apply
    first notes the cursor the status reports at that moment (what the previous apply left there)."""

    def __init__(self, status: Status) -> None:
        super().__init__()
        self.status = status
        self.reported_before: list[str] = []
        self.hold = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        self.reported_before.append(self.status.applied_cursor)
        if self.hold:
            self.holding.set()
            await self.release.wait()
        return await super().apply(ops)


async def until(condition: Callable[[], bool], what: str) -> None:
    await async_wait_until(condition, timeout=5, interval=0.001, what=what)


def delta(cursor: str, *leases: lease_pb2.Lease) -> Msg:
    return Msg(kind=Msg.DELTA, cursor=cursor, events=[Event(type=Event.UPSERT, lease=m) for m in leases])


async def test_a_delta_reports_the_cursor_of_the_changes_it_applied() -> None:
    view, status = LeaseView(), Status()
    kernel = HeldKernel(status)
    reconciler = bare_reconciler(kernel, view, status)
    task = asyncio.create_task(reconciler.run())
    try:
        reconciler.adopt(node(1))
        view.apply(Msg(kind=Msg.SNAPSHOT, events=[Event(lease=lease(1)), Event(lease=lease(2))]))
        view.apply(Msg(kind=Msg.SYNCED, cursor="1"))
        reconciler.wake()
        await until(lambda: status.synced and status.applied_cursor == "1", "the snapshot applied")

        kernel.hold = True
        view.apply(delta("2", lease(3)))
        reconciler.wake()
        await asyncio.wait_for(kernel.holding.wait(), 5)  # the delta of lease 3 is being applied...
        view.apply(delta("3", lease(4)))  # ...while the stream goes on
        reconciler.wake()
        kernel.hold = False
        kernel.release.set()

        await until(lambda: status.applied_cursor == "3", "the second delta applied")
        # between the two applies the status said "2": lease 4 (cursor "3") was not in the kernel yet
        assert kernel.reported_before[-2:] == ["1", "2"]
        assert any("10.244.4.0" in str(obj) for obj in kernel.objects.values())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
