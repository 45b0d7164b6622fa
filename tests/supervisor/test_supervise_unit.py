"""The supervision loop with scripted children and fake sleep: start, one-for-one, back-off, fatal exits,
giving up."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from supervisor import cli
from supervisor.child import RunResult
from supervisor.supervise import GiveUp, Supervisor


class ScriptedChild:
    """Stands in for supervisor.child.Child: each run ends as the script says, when the test says."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = "STOPPED"
        self.serving = asyncio.Event()
        self.runs = 0
        self.ends: asyncio.Queue[RunResult] = asyncio.Queue()
        self.stopped = 0
        self.never_serves = False
        """Runs stay STARTING until they end."""

    def set_status(self, status: str) -> None:
        self.status = status
        (self.serving.set if status == "SERVING" else self.serving.clear)()

    async def run_once(self) -> RunResult:
        self.runs += 1
        if self.never_serves:
            self.set_status("STARTING")
            return await self.ends.get()
        self.set_status("SERVING")
        result = await self.ends.get()
        self.set_status("STOPPED")
        return result

    async def stop(self, grace: float | None = None) -> int | None:
        self.stopped += 1
        return 0


def _config(restart: cli.RestartSettings | None = None) -> cli.Config:
    return cli.Config(restart=restart or cli.RestartSettings())


async def _until(predicate: Callable[..., bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


def _supervisor(
    config: cli.Config, clock: list[float], delays: list[float]
) -> tuple[Supervisor, ScriptedChild, ScriptedChild]:
    lease, backend = ScriptedChild("lease-service"), ScriptedChild("backend")

    async def sleep(delay: float) -> None:
        delays.append(delay)
        clock[0] += delay

    sup = Supervisor(config, lease, backend, clock=lambda: clock[0], rng=random.Random(1), sleep=sleep)
    return sup, lease, backend


async def test_both_children_start_at_once_and_only_the_contract_orders_them(clock: list[float]) -> None:
    delays: list[float] = []
    sup, lease, backend = _supervisor(_config(), clock, delays)
    lease.never_serves = True
    run = asyncio.create_task(sup.run())
    await _until(lambda: lease.status == "STARTING" and backend.runs == 1)
    sup.request_stop()
    assert await run == 0
    assert (backend.stopped, lease.stopped) == (1, 1)


@pytest.mark.parametrize("code", [2, 3])
async def test_a_fatal_exit_stops_everything_at_once_with_exit_2(
    clock: list[float], capsys: pytest.CaptureFixture[str], code: int
) -> None:
    delays: list[float] = []
    sup, lease, backend = _supervisor(_config(), clock, delays)
    run = asyncio.create_task(sup.run())
    await _until(lambda: backend.runs == 1)
    backend.ends.put_nowait(RunResult(code, 0.2, "exited", "cannot run: no interface 'eth9'"))
    assert await run == 2
    assert backend.runs == 1 and delays == []  # never restarted
    assert (backend.stopped, lease.stopped) == (1, 1)
    err = capsys.readouterr().err
    assert (
        f"backend stopped with {'usage or configuration error' if code == 2 else 'permanent failure'}" in err
    )
    assert f"(exit code {code}): cannot run: no interface 'eth9'" in err


async def test_a_fatal_code_from_a_child_flanneld_stopped_is_not_fatal(clock: list[float]) -> None:
    delays: list[float] = []
    sup, _lease, backend = _supervisor(_config(), clock, delays)
    run = asyncio.create_task(sup.run())
    await _until(lambda: backend.runs == 1)
    backend.ends.put_nowait(RunResult(2, 5, "3 consecutive health probes unanswered"))
    await _until(lambda: backend.runs == 2)
    sup.request_stop()
    assert await run == 0


async def test_a_crashing_child_is_restarted_with_growing_delays_and_the_other_is_left_alone(
    clock: list[float],
) -> None:
    delays: list[float] = []
    sup, lease, backend = _supervisor(
        _config(cli.RestartSettings(max_restarts=10, backoff_initial=0.5, backoff_max=4)), clock, delays
    )
    run = asyncio.create_task(sup.run())
    await _until(lambda: backend.runs == 1)
    for n in range(2, 7):
        backend.ends.put_nowait(RunResult(4, 0.1, "exited"))
        await _until(lambda n=n: backend.runs == n)
    assert lease.runs == 1
    bases = [0.5, 1, 2, 4, 4]
    assert all(b * 0.8 <= d <= min(b * 1.2, 4) for b, d in zip(bases, delays)), delays
    sup.request_stop()
    assert await run == 0


async def test_back_off_starts_over_after_a_run_as_long_as_the_window(clock: list[float]) -> None:
    delays: list[float] = []
    sup, _lease, backend = _supervisor(
        _config(cli.RestartSettings(max_restarts=10, window=60, backoff_initial=1, backoff_max=30)),
        clock,
        delays,
    )
    run = asyncio.create_task(sup.run())
    await _until(lambda: backend.runs == 1)
    for n, uptime in enumerate([1, 1, 1, 120], start=2):
        clock[0] += uptime
        backend.ends.put_nowait(RunResult(1, uptime, "exited"))
        await _until(lambda n=n: backend.runs == n)
    assert [round(d) for d in delays] == [1, 2, 4, 1]
    sup.request_stop()
    await run


async def test_more_restarts_than_allowed_within_the_window_gives_up(
    clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    delays: list[float] = []
    sup, lease, backend = _supervisor(_config(cli.RestartSettings(max_restarts=2, window=60)), clock, delays)
    run = asyncio.create_task(sup.run())
    await _until(lambda: backend.runs == 1)
    for n in (2, 3):
        backend.ends.put_nowait(RunResult(7, 0.1, "exited"))
        await _until(lambda n=n: backend.runs == n)
    backend.ends.put_nowait(RunResult(-9, 0.1, "3 consecutive health probes unanswered"))
    assert await run == 1
    err = capsys.readouterr().err
    assert "giving up: backend needed more than 2 restarts within 60s" in err
    assert "last exit status of backend: killed by SIGKILL (stopped by flanneld: 3 consecutive health" in err
    assert (backend.stopped, lease.stopped) == (1, 1) and lease.runs == 1


async def test_restarts_spread_over_more_than_the_window_never_give_up(clock: list[float]) -> None:
    delays: list[float] = []
    sup, _lease, backend = _supervisor(_config(cli.RestartSettings(max_restarts=2, window=10)), clock, delays)
    run = asyncio.create_task(sup.run())
    await _until(lambda: backend.runs == 1)
    for n in range(2, 8):
        clock[0] += 6  # one crash every ~6 s: never 3 within 10 s
        backend.ends.put_nowait(RunResult(1, 6, "exited"))
        await _until(lambda n=n: backend.runs == n)
    assert not run.done()
    sup.request_stop()
    assert await run == 0


def test_give_up_names_the_child_and_its_last_exit_status() -> None:
    exc = GiveUp("lease-service", 5, 60, RunResult(4, 0.3, "exited"))
    assert str(exc) == (
        "giving up: lease-service needed more than 5 restarts within 60s "
        "(--max-restarts/--restart-window); last exit status of lease-service: exit code 4"
    )
