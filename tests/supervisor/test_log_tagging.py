"""Children's stdout and stderr reach flanneld's stdout, tagged with the child's name."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

from tests.supervisor.harness import Flanneld


def test_text_lines_are_tagged(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld()
    f.wait_line("[backend] backend: SERVING")
    f.signal(signal.SIGTERM)
    f.wait()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert any(re.fullmatch(stamp + r" \[lease-service\] lease: a line on stderr", line) for line in f.lines)
    assert any(re.fullmatch(stamp + r" \[backend\] backend: started pid \d+ .*", line) for line in f.lines)
    assert any(
        re.fullmatch(stamp + r" \[flanneld\] backend started \(pid \d+\): .*", line) for line in f.lines
    )


def test_json_lines_are_objects_with_ts_child_and_line(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(args=["--log-format", "json"])
    f.wait_line('"backend: SERVING"')
    f.signal(signal.SIGTERM)
    f.wait()
    records = f.json_lines()
    assert all({"ts", "child", "line"} <= set(r) for r in records)
    assert {"child": "lease-service", "line": "lease: a line on stderr"}.items() <= next(
        r for r in records if r["child"] == "lease-service" and "stderr" in r["line"]
    ).items()
    assert any(r["child"] == "backend" and r["line"] == "backend: got SIGTERM" for r in records)
    assert any(r["child"] == "flanneld" and r.get("level") == "info" for r in records)
