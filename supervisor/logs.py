"""One output stream for flanneld and its children: a line per event, one timestamp, a level, the process.

Children started by flanneld get ``FLANNEL_LOG_FORMAT=json`` and write one JSON object per line
(``ts``, ``level``, ``logger``, ``msg`` and fields, see :mod:`flannel_rpc.logs`); flanneld re-renders
each record in its own ``--log-format`` keeping the child's timestamp, so every line carries exactly one.
A line that is not such an object (a third-party backend's plain output, a traceback before logging is
set up) is taken as it is, stamped on arrival, at level ``info`` from stdout and ``error`` from stderr.

Text: ``2026-11-25T20:41:38.123Z INFO [backend] backend_service: vxlan up``.
JSON: ``{"ts": "...", "level": "info", "process": "backend", "msg": "vxlan up", "logger": ..., ...}``.

Writing never blocks the event loop: lines go into a bounded queue that a writer thread drains in
batches; when the output cannot keep up, lines are dropped and the count is reported once it can.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

SELF = "flanneld"

_ERROR_LEVELS = frozenset({"error", "critical", "fatal"})
_RESERVED = frozenset({"ts", "level", "process", "msg"})


def timestamp(now: datetime | None = None) -> str:
    """UTC, milliseconds, ``Z``: ``2026-11-25T20:41:38.123Z``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def parse_child_line(line: str, stream: str) -> dict[str, Any]:
    """A child's output line as a record: its own JSON record when it wrote one, else the plain line."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if (
            isinstance(record, dict)
            and isinstance(record.get("msg"), str)
            and isinstance(record.get("level"), str)
        ):
            if not isinstance(record.get("ts"), str):
                record["ts"] = timestamp()
            record["level"] = record["level"].lower()
            return record
    return {"ts": timestamp(), "level": "error" if stream == "stderr" else "info", "msg": line}


class LogSink:
    """Renders records and hands them to a writer thread; :meth:`close` flushes what is queued."""

    def __init__(
        self, fmt: Literal["text", "json"] = "text", stream: TextIO | None = None, *, capacity: int = 10_000
    ) -> None:
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stdout
        self.capacity = capacity
        self._queue: deque[str] = deque()
        self._dropped = 0
        self._cond = threading.Condition()
        self._closed = False
        self._writing = False
        self._last_error: dict[str, str] = {}
        self._last_line: dict[str, str] = {}
        self._writer: threading.Thread | None = None

    # --- producing ---------------------------------------------------------------------------------

    def emit(self, process: str, msg: str, level: str = "info", ts: str | None = None, **fields: Any) -> None:
        """One record from ``process`` (``flanneld`` or a child's name)."""
        self.record(process, {"ts": ts or timestamp(), "level": level, "msg": msg, **fields})

    def record(self, process: str, record: Mapping[str, Any]) -> None:
        level = str(record.get("level", "info"))
        msg = str(record.get("msg", ""))
        self._last_line[process] = msg
        if level in _ERROR_LEVELS:
            self._last_error[process] = msg
        self._put(self.render(process, record))

    def render(self, process: str, record: Mapping[str, Any]) -> str:
        fields = {k: v for k, v in record.items() if k not in _RESERVED}
        ts, level, msg = (
            str(record.get("ts", "")),
            str(record.get("level", "info")),
            str(record.get("msg", "")),
        )
        if self.fmt == "json":
            return json.dumps(
                {"ts": ts, "level": level, "process": process, "msg": msg, **fields},
                ensure_ascii=False,
                default=str,
            )
        logger = fields.pop("logger", None)
        exc = fields.pop("exc", None)
        text = f"{ts} {level.upper()} [{process}] {f'{logger}: ' if logger else ''}{msg}"
        if fields:
            text += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if exc:
            text += " | " + str(exc).replace("\n", " | ")
        return text

    def last_error(self, process: str) -> str | None:
        """The last line ``process`` wrote at level error (else its last line at all), for a fatal exit."""
        return self._last_error.get(process) or self._last_line.get(process)

    def forget(self, process: str) -> None:
        """Start over for a new incarnation of ``process``."""
        self._last_error.pop(process, None)
        self._last_line.pop(process, None)

    async def forward(self, process: str, reader: asyncio.StreamReader, stream: str = "stdout") -> None:
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
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.record(process, parse_child_line(line, stream))

    # --- writing -----------------------------------------------------------------------------------

    def _put(self, text: str) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.capacity:
                self._dropped += 1
                return
            self._queue.append(text)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="log-writer", daemon=True)
                self._writer.start()
            self._cond.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                batch = list(self._queue)
                self._queue.clear()
                dropped, self._dropped = self._dropped, 0
                closed = self._closed
                self._writing = True
            if dropped:
                batch.append(
                    self.render(
                        SELF,
                        {
                            "ts": timestamp(),
                            "level": "warning",
                            "msg": f"{dropped} log lines dropped: the output was too slow",
                        },
                    )
                )
            if batch:
                try:
                    self.stream.write("\n".join(batch) + "\n")
                    self.stream.flush()
                except (BrokenPipeError, ValueError, OSError):
                    pass  # the output is gone: keep supervising rather than die on logging
            with self._cond:
                self._writing = False
                self._cond.notify_all()
            if closed:
                return

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what is queued now was written (tests, and before exiting)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queue and not self._writing, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the writer thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(timeout)


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c in text for c in ' "=')) else text


class _SinkHandler(logging.Handler):
    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {}
            if record.exc_info:
                fields["exc"] = self.format(record).splitlines()[-1]
            ts = timestamp(datetime.fromtimestamp(record.created, UTC))
            self.sink.emit(SELF, record.getMessage(), level=record.levelname.lower(), ts=ts, **fields)
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
