"""Lines rendered with one timestamp, a level and the process, in text and JSON; written off the loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading

from flannel_rpc.logs import JsonFormatter
from supervisor.logs import LogSink, parse_child_line


def test_text_lines_carry_a_timestamp_a_level_and_the_process() -> None:
    out = io.StringIO()
    sink = LogSink("text", out)
    sink.emit("backend", "vxlan up")
    sink.close()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO \[backend\] vxlan up\n", out.getvalue())


def test_json_lines_are_one_object_each() -> None:
    out = io.StringIO()
    sink = LogSink("json", out)
    sink.emit("lease-service", 'lease "10.244.3.0/24" acquired', subnet="10.244.3.0/24")
    sink.emit("flanneld", "started", level="warning")
    sink.close()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert set(first) == {"ts", "level", "process", "msg", "subnet"}
    assert first["process"] == "lease-service" and first["msg"] == 'lease "10.244.3.0/24" acquired'
    assert second["level"] == "warning"


def test_a_childs_json_record_is_rendered_with_its_own_timestamp_and_fields() -> None:
    record = logging.LogRecord("lease_service", logging.ERROR, "x.py", 1, "lost lease %s", ("k",), None)
    record.key = "10.244.1.0-24"
    line = JsonFormatter().format(record)
    parsed = parse_child_line(line, "stderr")
    assert parsed["level"] == "error" and parsed["msg"] == "lost lease k" and parsed["key"] == "10.244.1.0-24"
    out = io.StringIO()
    sink = LogSink("text", out)
    sink.record("lease-service", parsed)
    sink.close()
    assert (
        out.getvalue()
        == f"{parsed['ts']} ERROR [lease-service] lease_service: lost lease k key=10.244.1.0-24\n"
    )
    assert sink.last_error("lease-service") == "lost lease k"


def test_plain_lines_are_info_on_stdout_and_error_on_stderr() -> None:
    assert parse_child_line("hello", "stdout")["level"] == "info"
    assert parse_child_line("Traceback (most recent call last):", "stderr")["level"] == "error"
    assert parse_child_line('{"not": "a record"}', "stdout")["msg"] == '{"not": "a record"}'


async def test_forward_copies_every_line_including_an_unterminated_last_one() -> None:
    out = io.StringIO()
    reader = asyncio.StreamReader(limit=16)
    reader.feed_data(b"one\ntwo\r\n" + b"x" * 40 + b"\nlast")
    reader.feed_eof()
    sink = LogSink("json", out)
    await sink.forward("c", reader)
    sink.close()
    lines = [json.loads(line)["msg"] for line in out.getvalue().splitlines()]
    assert lines[:2] == ["one", "two"] and lines[-1] == "last"
    assert "".join(lines[2:-1]).replace("\n", "") == "x" * 40


class _BlockedStream(io.StringIO):
    """An output that blocks every write until released (a full pipe, a stuck terminal)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def test_a_blocked_output_never_blocks_the_caller_and_drops_are_counted() -> None:
    out = _BlockedStream()
    sink = LogSink("text", out, capacity=100)
    for i in range(1000):  # returns at once although nothing can be written
        sink.emit("backend", f"line {i}")
    out.release.set()
    sink.close()
    lines = out.getvalue().splitlines()
    drops = [
        re.search(r"WARNING \[flanneld\] (\d+) log lines dropped: the output was too slow", line)
        for line in lines
    ]
    kept = [line for line, drop in zip(lines, drops) if drop is None]
    assert drops[-1] is not None, lines[-1]
    assert len(kept) + sum(int(d.group(1)) for d in drops if d) == 1000 and len(kept) <= 2 * sink.capacity
