"""Tagged output lines, text and JSON."""

from __future__ import annotations

import asyncio
import io
import json
import re

from supervisor.logs import LogSink


def test_text_lines_carry_a_timestamp_and_the_child_name() -> None:
    out = io.StringIO()
    LogSink("text", out).emit("backend", "vxlan up")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[backend\] vxlan up\n", out.getvalue())


def test_json_lines_are_one_object_each() -> None:
    out = io.StringIO()
    sink = LogSink("json", out)
    sink.emit("lease-service", 'lease "10.244.3.0/24" acquired')
    sink.emit("flanneld", "started", level="info")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert set(first) == {"ts", "child", "line"}
    assert first["child"] == "lease-service" and first["line"] == 'lease "10.244.3.0/24" acquired'
    assert second["level"] == "info"


async def test_forward_copies_every_line_including_an_unterminated_last_one() -> None:
    out = io.StringIO()
    reader = asyncio.StreamReader(limit=16)
    reader.feed_data(b"one\ntwo\r\n" + b"x" * 40 + b"\nlast")
    reader.feed_eof()
    await LogSink("json", out).forward("c", reader)
    lines = [json.loads(line)["line"] for line in out.getvalue().splitlines()]
    assert lines[:2] == ["one", "two"] and lines[-1] == "last"
    assert "".join(lines[2:-1]).replace("\n", "") == "x" * 40
