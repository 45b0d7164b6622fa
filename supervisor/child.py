"""One child process: spawn it, forward its output, probe its health over grpc.health.v1 (spoken by
:mod:`supervisor.probe`, without the gRPC library), stop it.

:meth:`Child.run_once` is one incarnation, from spawn to exit; whoever calls it (the supervisor) decides
whether and when to run it again. A child whose health probes go unanswered is stopped by
:meth:`run_once` itself and reported as such.

Health states, as /healthz shows them: ``STOPPED``, ``WAITING`` (for what it depends on), ``BACKOFF``,
``STARTING`` (no answer yet), ``SERVING``/``NOT_SERVING``/``UNKNOWN``/``SERVICE_UNKNOWN`` (what the child
answered), ``NO_ANSWER`` (it answered before and now does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

from flannel_rpc.exitcodes import ExitCode, classify
from supervisor import probe, spawn
from supervisor.cli import ProbeSettings
from supervisor.logs import LogSink
from supervisor.privileges import Launch
from supervisor.spawn import Spawned

log = logging.getLogger(__name__)

SERVING = "SERVING"
STARTUP_PROBE_INTERVAL = 0.1
"""Seconds between probes until a child first answers SERVING (then ``--probe-interval``)."""


def describe_exit(returncode: int | None) -> str:
    """``exit code 3`` or ``killed by SIGKILL``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass(frozen=True)
class RunResult:
    """How one incarnation of a child ended."""

    returncode: int | None
    uptime: float
    reason: str
    """``exited`` or why flanneld stopped it (unanswered health probes)."""
    last_error: str | None = None
    """The last line it wrote at level error (else its last line), for a fatal exit's message."""

    @property
    def exit_status(self) -> str:
        return describe_exit(self.returncode)

    @property
    def code(self) -> ExitCode:
        """What the exit code means by the contract (:mod:`flannel_rpc.exitcodes`)."""
        return classify(self.returncode)

    @property
    def fatal(self) -> bool:
        """The child exited on its own saying that a restart cannot help (usage/config or permanent)."""
        return self.reason == "exited" and self.code.fatal


OUTPUT_LIMIT = 1 << 20
"""Bytes of one line of a child's output that flanneld reads at once."""


class Process:
    """A running child (:func:`supervisor.spawn.start`) as the supervisor handles it: its output as streams,
    its exit awaited on its pidfd, signals sent through the pidfd."""

    def __init__(self, spawned: Spawned, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader) -> None:
        self.pid = spawned.pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._pidfd = spawned.pidfd
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        """Its exit code (negative: the signal that killed it)."""
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        """Signal it; ProcessLookupError once it has exited."""
        if self._pidfd < 0:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)


async def adopt(spawned: Spawned) -> Process:
    """Take over a child started by :func:`supervisor.spawn.start`: its output pipes are read by the loop."""
    loop = asyncio.get_running_loop()
    readers = []
    for fd in (spawned.stdout, spawned.stderr):
        reader = asyncio.StreamReader(limit=OUTPUT_LIMIT, loop=loop)
        pipe = os.fdopen(fd, "rb", 0)  # the read transport owns it and closes it
        await loop.connect_read_pipe(functools.partial(asyncio.StreamReaderProtocol, reader), pipe)
        readers.append(reader)
    return Process(spawned, readers[0], readers[1])


class HealthProbe:
    """grpc.health.v1 ``Check`` of the overall service ``""`` over a unix socket, on a connection kept
    between probes (replaced at once when the child behind the socket changed)."""

    def __init__(self, socket: os.PathLike[str] | str, settings: ProbeSettings) -> None:
        self._connection = probe.Connection(socket)
        self._timeout = settings.timeout

    async def check(self) -> str | None:
        """The status name the child answered, or None when it did not answer."""
        return await self._connection.check(self._timeout)

    async def close(self) -> None:
        await self._connection.close()


class Child:
    """A supervised child: its launch line, its current process and its last known health."""

    def __init__(
        self,
        launch: Launch,
        sink: LogSink,
        probe: ProbeSettings,
        stop_grace: float,
        env: Mapping[str, str] | None = None,
        started: Spawned | None = None,
    ) -> None:
        self.launch = launch
        self.name = launch.name
        self._sink = sink
        self._probe_settings = probe
        self._stop_grace = stop_grace
        self._env = dict(env) if env is not None else None
        self.process: Process | None = None
        self._started = started
        """Its first incarnation, when flanneld started it before its own loop ran (see __main__)."""
        self._pumps: list[asyncio.Task[None]] = []
        self.status = "STOPPED"
        self.serving = asyncio.Event()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    def set_status(self, status: str) -> None:
        if status != self.status:
            log.info("%s health: %s -> %s", self.name, self.status, status)
        self.status = status
        if status == SERVING:
            self.serving.set()
        else:
            self.serving.clear()

    def _environment(self) -> dict[str, str]:
        return spawn.environment(self.launch, self._env if self._env is not None else os.environ)

    async def spawn(self) -> Process:
        """Start a new process (its own session, so a terminal's ^C reaches only flanneld), or take over the
        one started before the loop ran."""
        self.set_status("STARTING")
        started, self._started = self._started, None
        process = await adopt(started or spawn.start(self.launch.argv, self._environment()))
        self.process = process
        self.starts += 1
        assert process.stdout is not None and process.stderr is not None
        self._sink.forget(self.name)
        self._pumps = [
            asyncio.create_task(
                self._sink.forward(self.name, process.stdout, "stdout"), name=f"{self.name}-out"
            ),
            asyncio.create_task(
                self._sink.forward(self.name, process.stderr, "stderr"), name=f"{self.name}-err"
            ),
        ]
        log.info("%s started (pid %d): %s", self.name, process.pid, self.launch.display())
        return process

    async def run_once(self) -> RunResult:
        """Spawn, watch health, and return when the process has exited (or was stopped for being unhealthy).

        Cancelling this leaves the process running; :meth:`stop` ends it.
        """
        process = await self.spawn()
        started = time.monotonic()
        exited = asyncio.create_task(process.wait(), name=f"{self.name}-wait")
        monitor = asyncio.create_task(self._monitor(), name=f"{self.name}-health")
        reason = "exited"
        try:
            done, _ = await asyncio.wait({exited, monitor}, return_when=asyncio.FIRST_COMPLETED)
            if monitor in done and not exited.done():
                # a child that stopped answering because it is exiting (a fatal error closes its socket
                # first) gets one probe timeout to finish, so that its own exit code is what counts
                await asyncio.wait({exited}, timeout=self._probe_settings.timeout)
            if monitor in done and not exited.done():
                reason = monitor.result()
                log.warning("%s (pid %d) is unhealthy: %s; stopping it", self.name, process.pid, reason)
                await self.stop()
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            if not exited.done():
                exited.cancel()
        await self._drain_output()
        self.set_status("STOPPED")
        return RunResult(
            process.returncode, time.monotonic() - started, reason, self._sink.last_error(self.name)
        )

    async def _monitor(self) -> str:
        """Probe until the child must be considered dead; return why."""
        settings = self._probe_settings
        probe = HealthProbe(self.launch.socket, settings)
        started = time.monotonic()
        answered = False
        served = False  # probe fast until the first SERVING, so that readiness follows within 0.1 s
        failures = 0
        try:
            while True:
                status = await probe.check()
                if status is not None:
                    answered = True
                    served = served or status == SERVING
                    failures = 0
                    self.set_status(status)
                elif answered:
                    failures += 1
                    self.set_status("NO_ANSWER")
                    if failures >= settings.failures:
                        return f"{failures} consecutive health probes unanswered"
                elif time.monotonic() - started > settings.startup_timeout:
                    return f"no health answer on {self.launch.socket} within {settings.startup_timeout:g}s"
                # fast only while waiting for readiness: a child that stopped answering gets the usual
                # interval per failure, so ``failures`` unanswered probes always span the same time
                fast = not served and not failures
                await asyncio.sleep(
                    min(settings.interval, STARTUP_PROBE_INTERVAL) if fast else settings.interval
                )
        finally:
            await probe.close()

    async def _drain_output(self) -> None:
        # A grandchild may hold the pipe open after the child exits: do not wait for it forever.
        if self._pumps:
            pumps, self._pumps = self._pumps, []
            _, pending = await asyncio.wait(pumps, timeout=1.0)
            for pump in pending:
                pump.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def abandon(self) -> None:
        """Stop the process started before the loop ran if it was never taken over (flanneld gave up)."""
        started, self._started = self._started, None
        if started is not None:
            started.abandon()

    async def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL to its process group after ``grace`` seconds; returns the exit code."""
        process = self.process
        if process is None:
            return None
        grace = self._stop_grace if grace is None else grace
        if process.returncode is None:
            log.info("stopping %s (pid %d): SIGTERM, SIGKILL after %gs", self.name, process.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await process.wait()
            except TimeoutError:
                log.warning("%s (pid %d) still running after %gs: SIGKILL", self.name, process.pid, grace)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            log.info("%s (pid %d) stopped: %s", self.name, process.pid, describe_exit(process.returncode))
        await self._drain_output()
        self.set_status("STOPPED")
        return process.returncode
