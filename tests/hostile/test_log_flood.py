"""Any number of distinct bad items costs a bounded log: the gate every daemon's handler carries."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from flannel_rpc.logs import FloodGate, failure


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gated() -> Iterator[tuple[logging.Logger, io.StringIO, Clock]]:
    out = io.StringIO()
    clock = Clock()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(FloodGate(burst=5, per_minute=6, kinds=3, clock=clock))
    logger = logging.getLogger("flood-test")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logger, out, clock
    finally:
        logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_burst_of_distinct_bad_items_is_cut_at_the_burst_and_the_last_line_says_so(
    gated: tuple[logging.Logger, io.StringIO, Clock],
) -> None:
    log, out, _ = gated
    for n in range(1000):
        log.warning("skipping corrupt lease at %s: %s", f"10.256.{n}.0-24", "not a subnet")
    shown = lines(out)
    assert len(shown) == 5
    assert shown[0] == "WARNING skipping corrupt lease at 10.256.0.0-24: not a subnet"
    assert shown[-1].endswith("[further lines like this: at most 6 a minute]")


def test_held_back_lines_are_counted_on_the_next_line_let_through(
    gated: tuple[logging.Logger, io.StringIO, Clock],
) -> None:
    log, out, clock = gated
    for n in range(25):
        log.warning("skipping %s", n)
    clock.now += 10  # one token back at 6 a minute
    log.warning("skipping %s", "late")
    shown = lines(out)
    assert len(shown) == 6
    assert shown[-1].startswith("WARNING skipping late [20 more like this held back since ")
    # sustained: about 6 a minute, each carrying the count held back before it
    for second in range(300):
        clock.now += 1
        for n in range(20):
            log.warning("skipping %s", n)
    assert 27 <= len(lines(out)) - 6 <= 33
    assert all("held back since" in line for line in lines(out)[6:])


def test_other_kinds_of_line_and_debug_lines_are_not_held(
    gated: tuple[logging.Logger, io.StringIO, Clock],
) -> None:
    log, out, _ = gated
    for n in range(50):
        log.warning("skipping %s", n)
    log.error("our lease %s vanished", "10.244.1.0-24")
    for n in range(50):
        log.debug("detail %s", n)
    shown = lines(out)
    assert "ERROR our lease 10.244.1.0-24 vanished" in shown
    assert sum(line.startswith("DEBUG detail") for line in shown) == 50


def test_kinds_are_bounded_in_memory(gated: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    log, out, _ = gated
    gate = next(f for f in log.handlers[0].filters if isinstance(f, FloodGate))
    for n in range(100):
        log.warning(f"a template that is not constant {n}")  # a new kind each time
    assert len(gate._buckets) == 3
    assert len(lines(out)) == 100


def test_an_unexpected_exception_is_one_line_naming_its_type_message_and_place() -> None:
    def busy() -> None:
        raise OSError(16, "Device or resource busy " + "x" * 1000)

    try:
        busy()
    except OSError as exc:
        line = failure(exc)
    assert line.startswith("OSError: [Errno 16] Device or resource busy xxx")
    assert "… (" in line and "\n" not in line and len(line) < 400
    assert line.endswith(f"test_log_flood.py:{busy.__code__.co_firstlineno + 1}")
