"""The supervision tree: both children started at once, one-for-one restarts, fatal exits stop everything.

* Each child has its own loop (:meth:`Supervisor._keep_running`): run it, and when it ends, restart it
  after a back-off delay, unless it exceeded the restart intensity, in which case flanneld gives up.
  A restart of one child never touches the other: the lease stream's resync carries the dependency.
* Both start together (start-up time). The order is a rule of the contract, not of the supervisor: the
  lease service answers every call UNAVAILABLE until it serves, and the backend waits for its health to
  say SERVING before it acts.
* A child that exits with a fatal code of :mod:`flannel_rpc.exitcodes` (usage/config error, permanent
  failure) is not restarted: flanneld stops the other one and exits 2 with the child's last error line.
* Stopping (SIGTERM/SIGINT, a fatal exit, or giving up) stops the backend first, then the lease service,
  each with SIGTERM and SIGKILL after the grace period. Nothing here touches the dataplane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from flannel_rpc.exitcodes import ExitCode
from supervisor.child import RunResult
from supervisor.cli import Config
from supervisor.policy import Backoff, BackoffSequence, RestartIntensity

log = logging.getLogger(__name__)


class Supervised(Protocol):
    """What the supervisor needs of a child (:class:`supervisor.child.Child`; tests script one)."""

    name: str
    status: str
    """Its health as /healthz shows it; the supervisor sets ``BACKOFF`` between two runs."""

    async def run_once(self) -> RunResult: ...

    async def stop(self, grace: float | None = None) -> int | None: ...

    def set_status(self, status: str) -> None: ...


class GiveUp(Exception):
    """A child restarted more often than the restart intensity allows."""

    def __init__(self, child: str, restarts: int, window: float, last: RunResult) -> None:
        self.child = child
        self.last = last
        super().__init__(
            f"giving up: {child} needed more than {restarts} restarts within {window:g}s "
            f"(--max-restarts/--restart-window); last exit status of {child}: {last.exit_status}"
            + ("" if last.reason == "exited" else f" (stopped by flanneld: {last.reason})")
        )


class FatalExit(Exception):
    """A child exited saying that restarting it cannot help."""

    def __init__(self, child: str, last: RunResult) -> None:
        self.child = child
        self.last = last
        what = "usage or configuration error" if last.code == ExitCode.USAGE else "permanent failure"
        cause = f": {last.last_error}" if last.last_error else ""
        super().__init__(f"{child} stopped with {what} ({last.exit_status}){cause}")


class Supervisor:
    """Runs the lease service and the backend until told to stop or a child crash-loops."""

    def __init__(
        self,
        config: Config,
        lease: Supervised,
        backend: Supervised,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.lease = lease
        self.backend = backend
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._stop = asyncio.Event()
        self.stopping = False
        self.on_stopping: Callable[[], None] = lambda: None
        """Called once when stopping begins (systemd's STOPPING=1)."""

    @property
    def children(self) -> tuple[Supervised, Supervised]:
        return (self.lease, self.backend)

    def statuses(self) -> dict[str, str]:
        """Each child's health, for /healthz."""
        return {child.name: child.status for child in self.children}

    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            log.info("received %s: stopping backend, then lease service", sig.name)
        self._stop.set()

    async def run(self) -> int:
        """Supervise until stopped (exit status 0), until a child exits with a fatal code (exit status 2)
        or until a child crash-loops (exit status 1)."""
        loops = [
            asyncio.create_task(self._keep_running(self.lease), name="lease-loop"),
            asyncio.create_task(self._keep_running(self.backend), name="backend-loop"),
        ]
        stop = asyncio.create_task(self._stop.wait(), name="stop-signal")
        code = 0
        try:
            done, _ = await asyncio.wait([*loops, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in loops:
                if task in done:
                    exc = task.exception()
                    if isinstance(exc, FatalExit):
                        log.error("%s; stopping", exc)
                        print(f"flanneld: {exc}", file=sys.stderr, flush=True)
                        code = max(code, ExitCode.USAGE)
                        continue
                    if isinstance(exc, GiveUp):
                        log.error("%s", exc)
                        print(f"flanneld: {exc}", file=sys.stderr, flush=True)
                    else:
                        log.error("supervision of %s failed: %r", task.get_name(), exc)
                        print(f"flanneld: internal error in {task.get_name()}: {exc!r}", file=sys.stderr)
                    code = max(code, ExitCode.FAILURE)
        finally:
            await self.shutdown(loops)
            stop.cancel()
        return int(code)

    async def shutdown(self, loops: list[asyncio.Task[None]]) -> None:
        """Stop restarting anything, then stop the backend, then the lease service."""
        self.stopping = True
        self.on_stopping()
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for child in (self.backend, self.lease):
            await child.stop()
        log.info("flanneld stopped (dataplane left as it is)")

    async def _keep_running(self, child: Supervised) -> None:
        restart = self.config.restart
        backoff = Backoff(BackoffSequence(restart.backoff_initial, restart.backoff_max), rng=self._rng)
        intensity = RestartIntensity(restart.max_restarts, restart.window)
        while True:
            result = await child.run_once()
            if result.fatal:
                raise FatalExit(child.name, result)
            if result.uptime >= restart.window:
                backoff.reset()
            if intensity.record(self._clock()):
                raise GiveUp(child.name, restart.max_restarts, restart.window, result)
            delay = backoff.next_delay()
            log.warning(
                "%s (%s) %s after %.1fs; restarting in %.2fs (%d of at most %d restarts within %gs)",
                child.name,
                result.exit_status,
                result.reason,
                result.uptime,
                delay,
                intensity.count(self._clock()),
                restart.max_restarts,
                restart.window,
            )
            child.set_status("BACKOFF")
            await self._sleep(delay)
