"""The first snapshot's parts reach the kernel in a pipeline: the next part is planned and handed over while
the kernel carries out the one before (so the kernel never waits for the loop between parts), in the order
they were planned, and never more than two at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from backend_service import reconciler as reconciler_module
from backend_service.desired import Route
from backend_service.follow import LeaseView
from backend_service.kernel.model import ApplyResult, Op
from backend_service.reconciler import EARLY_IN_FLIGHT
from backend_service.status import Status
from flannel_testkit.wait import async_wait_until
from proto.flannel.v1 import lease_pb2

from .factory import lease, node
from .fakes import FakeKernel, bare_reconciler

Msg = lease_pb2.WatchLeasesResponse
Event = lease_pb2.LeaseEvent


class GatedKernel(FakeKernel):
    """Each non-empty apply waits until the test lets one through; counts how many wait at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Semaphore(0)
        self.waiting = 0
        self.most = 0
        self.handed: list[tuple[Op, ...]] = []  # in the order apply was called

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        if ops:
            self.handed.append(tuple(ops))
            self.waiting += 1
            self.most = max(self.most, self.waiting)
            await self.gate.acquire()
            self.waiting -= 1
        return await super().apply(ops)


async def until(condition: Callable[[], bool], what: str) -> None:
    await async_wait_until(condition, timeout=5, interval=0.001, what=what)


def routed(parts: list[tuple[Op, ...]]) -> list[list[str]]:
    return [[str(op.obj.dst) for op in part if isinstance(op.obj, Route)] for part in parts]


async def test_early_parts_are_handed_over_while_the_one_before_is_carried_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler_module, "FIRST_EARLY_CHUNK", 1)
    monkeypatch.setattr(reconciler_module, "EARLY_CHUNK", 1)  # a part per lease
    view, status = LeaseView(), Status()
    kernel = GatedKernel()
    reconciler = bare_reconciler(kernel, view, status)
    task = asyncio.create_task(reconciler.run())
    try:
        reconciler.adopt(node(1))
        await until(lambda: status.last_reconcile is not None, "the full reconcile before SYNCED")
        peers = range(2, 7)
        view.apply(Msg(kind=Msg.SNAPSHOT, reset=True, events=[Event(lease=lease(n)) for n in peers]))
        reconciler.wake()
        await until(lambda: kernel.waiting == EARLY_IN_FLIGHT, "a part handed over behind the first")
        assert routed(kernel.handed) == [["10.244.2.0/24"], ["10.244.3.0/24"]]
        assert kernel.applied == []  # neither is done: the second was planned while the first waited
        for done in range(1, len(peers) + 1):
            kernel.gate.release()
            await until(lambda: len(kernel.applied) >= done, f"part {done} carried out")  # noqa: B023
        assert routed(kernel.handed) == [[f"10.244.{n}.0/24"] for n in peers]
        assert routed(kernel.applied) == routed(kernel.handed)
        assert kernel.most == EARLY_IN_FLIGHT
        assert len(kernel.objects) == 3 * len(peers)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
