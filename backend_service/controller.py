"""The backend as a small controller: its tasks run under one ``asyncio.TaskGroup``.

Tasks: the session with the lease service (which runs the follower of the lease stream), the
reconciler and its reporter, and the rules task (flannel's FORWARD/masquerade rules, ``masq.TrafficRules``). None of them is fire-and-forget: if any fails unexpectedly, the failure is
logged once, health turns NOT_SERVING, the other tasks are cancelled and :meth:`Controller.run`
returns a non-zero exit code for the supervisor to act on. A stop request (SIGTERM) cancels them
all and returns 0; the dataplane stays as it is.

Exit codes: 0 when asked to stop, :data:`EXIT_USAGE` for an unusable configuration (restarting
cannot help), :data:`EXIT_PERMANENT` when the host cannot run it as configured (no such
interface), :data:`EXIT_FAILURE` for anything unexpected (a restart may help).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, NoReturn, Protocol, TypeVar

from flannel_rpc.exitcodes import ExitCode

from .backend import Backend
from .config import ConfigError, NetworkConfig
from .follow import LeaseView
from .kernel.model import Kernel
from .node import LocalNode
from .planner import Planner
from .reconciler import Reconciler
from .status import Health, Status

log = logging.getLogger(__name__)

# the contract with flanneld (flannel_rpc.exitcodes), under the names this package uses
EXIT_OK = ExitCode.OK
EXIT_FAILURE = ExitCode.FAILURE
EXIT_USAGE = ExitCode.USAGE
EXIT_PERMANENT = ExitCode.PERMANENT


class Fatal(Exception):
    """A condition the backend cannot run under (bad config, no public interface); restarting cannot help."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Stopped(Exception):
    """Raised inside the task group to stop it when asked to (not a failure)."""


class PreparedLike(Protocol):
    """What the session's :meth:`SessionLike.prepare` gives the controller (:class:`backend_service.session.Prepared`)."""

    @property
    def config(self) -> NetworkConfig: ...

    @property
    def backend(self) -> Backend: ...


P = TypeVar("P", bound=PreparedLike)


class SessionLike(Protocol[P]):
    """The session as the controller drives it (:class:`backend_service.session.Session`)."""

    async def prepare(self) -> P: ...

    async def run(
        self, prepared: P, adopted: Callable[[LocalNode], None], changed: Callable[[], None]
    ) -> NoReturn: ...

    async def report(self) -> None: ...

    async def ensure_masq(self) -> None: ...

    async def watch_devices(self, prepared: P, repaired: Callable[[LocalNode], None]) -> NoReturn: ...

    async def keep_rules(self) -> None: ...


class Controller(Generic[P]):
    """Runs the session and the reconciler as owned tasks (see the module docstring)."""

    def __init__(
        self,
        session: SessionLike[P],
        kernel: Kernel,
        view: LeaseView,
        status: Status,
        health: Health,
        *,
        resync_period: float,
    ) -> None:
        self.session = session
        self.kernel = kernel
        self.view = view
        self.status = status
        self.health = health
        self.resync_period = resync_period
        self.reconciler: Reconciler | None = None

    async def _jobs(self, group: asyncio.TaskGroup) -> None:
        prepared = await self.session.prepare()
        planner = Planner(prepared.config, prepared.backend)
        reconciler = self.reconciler = Reconciler(
            planner,
            self.kernel,
            self.view,
            self.status,
            self.health,
            resync_period=self.resync_period,
            report=self.session.report,
            on_resync=self.session.ensure_masq,
        )
        group.create_task(_forever("reconciler", reconciler.run()), name="reconciler")
        group.create_task(_forever("reporter", reconciler.report_forever()), name="reporter")
        group.create_task(_forever("rules", self.session.keep_rules()), name="rules")
        group.create_task(
            _forever("session", self.session.run(prepared, reconciler.adopt, reconciler.wake)), name="session"
        )
        group.create_task(
            _forever("device watcher", self.session.watch_devices(prepared, reconciler.adopt)),
            name="device-watcher",
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Until ``stop`` is set (0) or a task fails (non-zero, health NOT_SERVING)."""
        self.status.leases = lambda: self.view.leases
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_stop_on(stop), name="stop")
                await self._jobs(group)
        except BaseExceptionGroup as failure:
            return await self._ended(failure)
        return EXIT_OK  # not reached: the task group only ends by an exception

    async def _ended(self, failure: BaseExceptionGroup[BaseException]) -> int:
        errors = [exc for exc in _leaves(failure) if not isinstance(exc, (Stopped, asyncio.CancelledError))]
        if not errors:
            log.info("stopped; the dataplane stays as it is")
            return EXIT_OK
        first = errors[0]
        if isinstance(first, Fatal):
            code, reason = first.code, str(first)
            log.error("cannot run: %s", first)
        elif isinstance(first, ConfigError):
            code, reason = EXIT_USAGE, str(first)
            log.error("cannot run: %s", first)
        else:
            code, reason = EXIT_FAILURE, f"{type(first).__name__}: {first}"
            log.error("backend failed, exiting for a restart: %s", reason, exc_info=first)
        for other in errors[1:]:
            log.error("and also: %s: %s", type(other).__name__, other)
        await self.health.fail(reason)
        return code


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _stop_on(stop: asyncio.Event) -> NoReturn:
    await stop.wait()
    raise Stopped()


async def _forever(name: str, work: Awaitable[object]) -> NoReturn:
    """``work`` must never end; if it returns, that is a bug like any exception."""
    await work
    raise RuntimeError(f"the {name} task ended")
