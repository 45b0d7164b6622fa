"""The reconciler: keeps the kernel equal to the leases, by delta when it can, in full by the clock.

It wakes when the lease view changed or the node's own lease was adopted, and at the resync
clock. A full reconcile (read the kernel, plan every lease, apply) runs every ``resync_period``
seconds counted from the start of the previous one, whatever deltas arrive in between, and also
after a snapshot, a new own lease, and any failure. Between them each batch of changed leases is
planned as a delta by the same :class:`~backend_service.planner.Planner`. Before the first SYNCED,
the first snapshot's leases are taken as they arrive and planned early (add what the kernel lacks,
delete nothing), :data:`EARLY_CHUNK` at a time; each part is planned while the kernel carries out the
previous one and waits in the kernel's queue behind it, so the kernel is busy while the rest of the
snapshot streams. The full reconcile at SYNCED then decides everything, deletes included.

Expected trouble is reported, not raised: ops the kernel refuses (``ApplyResult.failures``), and
a kernel that cannot be read or written at all (``OSError``, :class:`KernelError`; retried with
back-off). Anything else is a bug and propagates, so that the controller ends the process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NoReturn

from flannel_rpc.logs import LogOnce, shorten

from . import metrics
from .follow import LeaseView
from .kernel.model import ApplyResult, Expected, Kernel, KernelCheck, KernelError, KernelSnapshot
from .node import LocalNode
from .planner import Plan, Planner
from .status import Health, Status

log = logging.getLogger(__name__)

RETRY_FIRST = 0.5
"""Seconds before a failed full reconcile is retried; doubled after each failure, up to the period."""
EARLY_CHUNK = 500
"""Leases of the first snapshot per early plan (a snapshot message's worth by default)."""
FIRST_EARLY_CHUNK = 100
"""Leases of the very first early plan: the first peers reach the kernel after ~7 ms of planning instead
of ~40 (500 leases); the next part is planned while the kernel takes these."""
EARLY_IN_FLIGHT = 2
"""Early parts handed to the kernel and not yet done, at most: the one the kernel carries out and the next,
waiting for it (more would hold more planned parts in memory and gain nothing)."""

DELTA_INTERVAL = 0.005
"""Seconds from the start of one delta to the next at the least: changes arriving meanwhile are planned
and applied together, in one netlink batch. A change after a quiet spell goes at once; under churn each
batch costs its fixed part (wake, plan, status) once for all the changes it carries."""

REPORT_INTERVAL = 0.5
"""Seconds between reports to the lease service at the least; the last state is always reported."""


def _settle_heap() -> None:
    """After a full plan, what it made lives until the next one (every peer's lease, verdict and kernel
    objects) and the imports live for good: collect the garbage once, then move what is alive out of the
    collector's way (``gc.freeze``). Otherwise each full collection walks all of it again, a pause of
    0.5 s at 10,000 peers under churn (measured with gc.callbacks, load 8), which deltas wait behind.
    Frozen objects are still freed when nothing refers to them; only a cycle among them would stay."""
    gc.collect()
    gc.freeze()


class Reconciler:
    """Applies the planner's plans to the kernel (see the module docstring)."""

    def __init__(
        self,
        planner: Planner,
        kernel: Kernel,
        view: LeaseView,
        status: Status,
        health: Health,
        *,
        resync_period: float,
        report: Callable[[], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.planner = planner
        self.kernel = kernel
        self.view = view
        self.status = status
        self.health = health
        self.resync_period = resync_period
        self._report = report
        self._on_resync = on_resync
        self._clock = clock
        self._wake = asyncio.Event()
        self._report_due = asyncio.Event()
        self._node: LocalNode | None = None
        self._full_needed = True
        self._rejected_logged = LogOnce()
        self._errors_seen: set[str] = set()
        self._early_chunk = FIRST_EARLY_CHUNK

    # --- told by the session and the follower ----------------------------------------------------

    def wake(self) -> None:
        """The lease view changed."""
        self._wake.set()

    def adopt(self, node: LocalNode) -> None:
        """This node's lease was (re)adopted: every peer's plan may change; reconcile in full."""
        self._node = node
        self._full_needed = True
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> NoReturn:
        loop = asyncio.get_running_loop()
        next_full = self._clock()  # the first full reconcile as soon as there is a node
        retry = RETRY_FIRST
        backing_off = False
        next_delta = loop.time()
        while True:
            if self._node is not None:
                timer = loop.call_later(max(0.0, next_full - self._clock()), self._wake.set)
                await self._wake.wait()
                timer.cancel()
            else:
                await self._wake.wait()
            if self.view.synced and not self._full_needed and loop.time() < next_delta:
                await asyncio.sleep(next_delta - loop.time())  # let more changes join this batch
            next_delta = loop.time() + DELTA_INTERVAL
            self._wake.clear()
            node = self._node
            now = self._clock()
            if node is None or (backing_off and now < next_full):
                continue  # a failed full reconcile is retried at its time, not at every delta
            if not self._full_needed and now < next_full:
                if not await self._guarded(self._early()):
                    self._full_needed = True
                    self._wake.set()
                    continue
                if not self.view.synced:
                    continue  # before SYNCED: early plans only (and the full ones the clock asks for)
            self.view.drop_early()
            # the cursor of exactly these changes: the stream goes on while they are applied, and a cursor
            # read after the apply would report changes still waiting in the view as applied
            changes, cursor, synced = self.view.take_changes(), self.view.cursor, self.view.synced
            if not self._full_needed and now < next_full and changes is not None:
                if not changes:
                    continue
                plan = self.planner.plan_delta(changes)
                if plan is not None:
                    if not await self._guarded(self._apply(plan, cursor=cursor, synced=synced)):
                        self._full_needed = True  # the kernel disagreed: trust nothing, full at once
                        self._wake.set()
                    continue
            clocked = now >= next_full
            self._full_needed = False
            if await self._guarded(self._full(node)):
                next_full, retry, backing_off = now + self.resync_period, RETRY_FIRST, False
            else:
                next_full, retry, backing_off = now + retry, min(retry * 2, self.resync_period), True
                self._full_needed = True
            if clocked:
                await self._on_resync()

    async def _early(self) -> bool:
        """Plan and apply the first snapshot's leases that have arrived, part by part; False when the kernel
        refused something. Up to :data:`EARLY_IN_FLIGHT` parts are handed to the kernel at once: each part is
        planned while the kernel carries out the ones before, and is waiting in the kernel's queue when the
        one before is done, so the kernel goes on without waiting for the loop (the result of a part, its
        commit and status, and the next plan run meanwhile)."""
        ok = True
        async with asyncio.TaskGroup() as tasks:
            applying: deque[asyncio.Task[bool]] = deque()
            while (plan := self._plan_early()) is not None:
                applying.append(tasks.create_task(self._apply(plan, early=True), name="apply-early"))
                await asyncio.sleep(0)  # the part is handed to the kernel before the next is planned
                if len(applying) >= EARLY_IN_FLIGHT:
                    ok = await applying.popleft() and ok
            for task in applying:
                ok = await task and ok
        return ok

    def _plan_early(self) -> Plan | None:
        leases = self.view.take_early(self._early_chunk)
        if not leases:
            return None
        self._early_chunk = EARLY_CHUNK
        return self.planner.plan_early(leases)

    async def _full(self, node: LocalNode) -> bool:
        """Read the kernel, plan every lease, apply; or, when the planner's memory can tell, check the
        kernel against it and plan only the leases that changed (:meth:`_checked`)."""
        devices = self.planner.backend.devices
        check = await self.kernel.check(devices)
        if check is not None and self.planner.checkable(node):
            done = await self._checked(check)
            if done is not None:
                return done
        snapshot, expect, cursor, synced = await self._read(devices, node, check)
        leases = self.view.leases if synced else {}  # before SYNCED the view is empty
        plan = self.planner.plan_full(leases, node, snapshot, synced=synced, expect=expect)
        self.status.device_present = set(devices) <= set(snapshot.links.values())
        del snapshot, expect
        done = await self._apply(plan, cursor=cursor, synced=synced)
        del plan
        if (
            synced
        ):  # before SYNCED the view is empty (a first start plans nothing): the one at SYNCED follows,
            _settle_heap()  # and its collection (~20 ms of CPU at start-up) would delay the first peers
        return done

    async def _read(
        self, devices: tuple[str, ...], node: LocalNode, check: KernelCheck | None
    ) -> tuple[KernelSnapshot, Expected | None, str, bool]:
        """The kernel read for a full plan (and the cursor and synced flag it plans for). With a check's
        connected networks the planner says first what it expects, and the read builds objects only for
        what differs (:class:`~backend_service.kernel.model.Expected`); read again when SYNCED came
        meanwhile (the expectation was for a plan that deletes nothing), unless the first snapshot's leases
        wait to be planned early: then the read serves the plan before SYNCED it was made for (no lease
        planned, the ground for the early plans), and the first peers are planned 100 at a time as if the
        snapshot were still streaming, not all of them before the first write (1,000 leases listed and
        streamed while the first full reconcile read the kernel: ~50 ms of planning before the first peer)."""
        for _ in range(3):
            if check is None:
                break
            cursor, synced = self.view.cursor, self.view.synced
            expect = self.planner.expect(self.view.leases, node, check.connected, synced=synced)
            snapshot = await self.kernel.read(devices, expect)
            if self.view.synced == synced or self.view.early_waiting():
                return snapshot, expect, cursor, synced
            del snapshot, expect
            check = await self.kernel.check(devices)
        cursor, synced = self.view.cursor, self.view.synced
        snapshot = await self.kernel.read(devices)  # no expectation: serves either plan
        if self.view.synced != synced and not self.view.early_waiting():
            cursor, synced = self.view.cursor, self.view.synced
        return snapshot, None, cursor, synced

    async def _checked(self, check: KernelCheck) -> bool | None:
        """A full reconcile in the common case, where the kernel holds what the last plans wrote: a
        digest of the kernel (no object built per entry) against the planner's, then the leases that are
        not the ones last planned as one delta. None when that cannot tell (drift, connected networks
        changed): then the caller reads and plans in full. At 10,000 peers this is the raw dumps and no
        plan, instead of 30,000 objects read, 10,000 leases checked and diffed."""
        if not self.planner.holds(check):
            log.info(
                "the kernel differs from what was written (or the connected networks changed): full reconcile"
            )
            return None
        devices = self.planner.backend.devices
        self.status.device_present = set(devices) <= set(check.links.values())
        cursor, synced = self.view.cursor, self.view.synced
        plan = self.planner.plan_delta(self.planner.changes_since(self.view.leases))
        if plan is None:
            return None
        return await self._apply(plan, cursor=cursor, synced=synced)

    async def _guarded(self, work: Awaitable[bool]) -> bool:
        """Run a reconcile; False when an op failed or the kernel could not be used at all."""
        try:
            try:
                return await work
            except BaseExceptionGroup as group:  # from the early plans' task group: the first failure
                raise group.exceptions[0] from None
        except (OSError, KernelError) as exc:
            self.planner.invalidate()
            message = f"{type(exc).__name__}: {exc}"
            if message not in self._errors_seen:  # once per distinct error, not every retry
                self._errors_seen.add(message)
                log.error("reconcile failed, retrying: %s", message)
            self.status.last_ok = False
            self.status.last_outcome = f"error: {message}"[:2000]
            self.status.last_reconcile = datetime.now(UTC)
            await self.health.update()
            return False

    async def _apply(
        self, plan: Plan, *, cursor: str | None = None, synced: bool | None = None, early: bool = False
    ) -> bool:
        """Apply ``plan``, remember it, and publish status, metrics, health and the report (not for an
        ``early`` plan: the full one at SYNCED reports); True when every op was applied."""
        with metrics.RECONCILE_SECONDS.time():
            result = await self.kernel.apply(plan.ops) if plan.ops else ApplyResult()
        metrics.KERNEL_OPS.inc(result.applied)
        metrics.KERNEL_OP_FAILURES.inc(len(result.failures))
        self.planner.commit(plan, result.ok)
        if plan.full and plan.ops:
            log.info(
                "reconciled %d peers: %d changes applied, %d failed%s",
                len(self.planner.modes),
                result.applied,
                len(result.failures),
                "" if plan.deletes else " (not synced yet: nothing deleted)",
            )
        if not result.ok:
            log.warning("%d of %d changes failed; reconciling in full", len(result.failures), len(plan.ops))
        else:
            self._errors_seen.clear()
        status = self.status
        status.peers = self.planner.modes  # the planner's live map: no copy per delta
        status.rejected = {key: r.to_proto() for key, r in self.planner.rejected.items()}
        metrics.PEERS.set(len(status.peers))
        metrics.REJECTED_LEASES.set(len(status.rejected))
        for key, rejection in status.rejected.items():  # once per change of each rejection, values cut
            if self._rejected_logged.first(key, (rejection.reason, rejection.message)):
                log.warning(
                    "rejected lease %s: %s", rejection.reason, shorten(rejection.message, 300, quote=False)
                )
        self._rejected_logged.keep_only(status.rejected)
        status.last_reconcile = datetime.now(UTC)
        status.last_ok = result.ok
        status.last_outcome = "ok" if result.ok else "; ".join(map(str, result.failures))[:2000]
        if not early:  # an early plan is part of a snapshot: neither applied up to a cursor nor synced
            status.applied_cursor = self.view.cursor if cursor is None else cursor
            status.synced = self.view.synced if synced is None else synced
        await self.health.update()
        if not early:
            self._report_due.set()
        return result.ok

    async def report_forever(self) -> NoReturn:
        """The report task: after each reconcile, but at most every :data:`REPORT_INTERVAL` seconds,
        tell the lease service how far the kernel is applied and which leases were rejected (a report
        per delta cost more than the delta)."""
        while True:
            await self._report_due.wait()
            self._report_due.clear()
            await self._report()
            await asyncio.sleep(REPORT_INTERVAL)
