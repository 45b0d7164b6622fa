"""One output stream for flanneld and its children: every line tagged with where it came from.

Text: ``2026-11-25T20:41:38.123Z [backend] the child's line``.
JSON: one object per line, ``{"ts": "...", "child": "backend", "line": "..."}``; flanneld's own events use
``"child": "flanneld"`` and add ``"level"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Literal, TextIO

SELF = "flanneld"


def _timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class LogSink:
    """Writes tagged lines to a text stream (stdout by default), one write per line."""

    def __init__(self, fmt: Literal["text", "json"] = "text", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def emit(self, child: str, line: str, level: str | None = None) -> None:
        if self.fmt == "json":
            record: dict[str, str] = {"ts": _timestamp(), "child": child, "line": line}
            if level is not None:
                record["level"] = level
            text = json.dumps(record, ensure_ascii=False)
        else:
            text = f"{_timestamp()} [{child}] {line}"
        with self._lock:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # stdout gone: keep supervising rather than die on logging

    async def forward(self, child: str, reader: asyncio.StreamReader) -> None:
        """Copy a child's output, line by line, until it closes."""
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:  # end of output, maybe with an unterminated line
                raw = exc.partial
                if not raw:
                    return
            except asyncio.LimitOverrunError as exc:  # a line longer than the limit: pass it on in pieces
                raw = await reader.read(max(exc.consumed, 1))
            except ConnectionError:
                return
            self.emit(child, raw.decode("utf-8", errors="replace").rstrip("\r\n"))


class _SinkHandler(logging.Handler):
    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += " | " + self.format(record).splitlines()[-1]
            self.sink.emit(SELF, message, level=record.levelname.lower())
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def install(sink: LogSink, level: int = logging.INFO) -> None:
    """Route flanneld's own ``logging`` records to the sink (replacing any previous routing)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _SinkHandler):
            root.removeHandler(handler)
    root.addHandler(_SinkHandler(sink))
    root.setLevel(level)
