"""Children's output reaches flanneld's stdout as one line per event: one timestamp, a level, the process."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

from tests.supervisor.harness import Flanneld

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_text_lines_carry_one_timestamp_a_level_and_the_process(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld()
    f.wait_line("[backend] backend: SERVING")
    f.wait_line("[lease-service] lease: SERVING")  # the two start together: wait for both
    f.signal(signal.SIGTERM)
    f.wait()
    assert any(
        re.fullmatch(STAMP + r" ERROR \[lease-service\] lease: a line on stderr", line) for line in f.lines
    )
    assert any(
        re.fullmatch(STAMP + r" INFO \[backend\] backend: started pid \d+ .*", line) for line in f.lines
    )
    assert any(
        re.fullmatch(STAMP + r" INFO \[flanneld\] backend started \(pid \d+\): .*", line) for line in f.lines
    )
    # a child's own record keeps its timestamp (the only one on the line), its level and its fields
    assert "2026-01-02T03:04:05.678Z WARNING [backend] fake: backend: structured node=n1 count=3" in f.lines
    assert all(len(re.findall(STAMP, line)) == 1 for line in f.lines), f.lines


def test_json_lines_have_level_process_msg_and_fields(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(args=["--log-format", "json"])
    f.wait_line('"backend: SERVING"')
    f.wait_line('"lease: SERVING"')  # the two start together: wait for both
    f.signal(signal.SIGTERM)
    f.wait()
    records = f.json_lines()
    assert all({"ts", "level", "process", "msg"} <= set(r) for r in records)
    assert {"process": "lease-service", "level": "error", "msg": "lease: a line on stderr"}.items() <= next(
        r for r in records if r["process"] == "lease-service" and "stderr" in r["msg"]
    ).items()
    assert any(r["process"] == "backend" and r["msg"] == "backend: got SIGTERM" for r in records)
    assert any(r["process"] == "flanneld" and r["level"] == "info" for r in records)
    structured = next(
        r for r in records if r["process"] == "lease-service" and r["msg"] == "lease: structured"
    )
    assert structured == {
        "ts": "2026-01-02T03:04:05.678Z",
        "level": "warning",
        "process": "lease-service",
        "msg": "lease: structured",
        "logger": "fake",
        "node": "n1",
        "count": 3,
    }
