"""One log format for every daemon: a line per event on stderr, which flanneld tags per child.

Standalone, a daemon writes text. Started by flanneld (``FLANNEL_LOG_FORMAT=json`` in its environment) it
writes one JSON object per line, ``{"ts", "level", "logger", "msg", ...}`` plus the fields given with
``extra=``, and a traceback as ``exc``: flanneld re-renders those records in its own ``--log-format``
with the child's timestamp, so that every line carries one timestamp and a level.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Hashable
from datetime import UTC, datetime

LOG_FORMAT_ENV = "FLANNEL_LOG_FORMAT"
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """A record as one JSON line (the machine format flanneld reads)."""

    def format(self, record: logging.LogRecord) -> str:
        now = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, object] = {
            "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _Bucket:
    __slots__ = ("at", "held", "held_since", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at
        self.held = 0
        self.held_since = 0.0


class FloodGate(logging.Filter):
    """At most ``burst`` lines of one kind at once, then ``per_minute`` a minute (INFO and above; debug
    lines are all kept): a kind is a logger and
    its message template (``"skipping corrupt lease at %s: %s (%s)"``), so that any number of distinct
    bad items (a writer putting a new corrupt key in the store fifty times a second) costs a bounded log.

    The line that spends the last token says so; the next line let through after some were held back
    carries their count and since when. Lines of other kinds are not affected. Memory: at most
    ``kinds`` templates, the least recently seen forgotten first.
    """

    def __init__(
        self,
        burst: int = 100,
        per_minute: float = 10,
        *,
        kinds: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.rate = per_minute / 60.0
        self.kinds = kinds
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, object], _Bucket] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:  # debug lines are asked for (-vv): all of them
            return True
        now = self._clock()
        kind = (record.name, record.msg)
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = _Bucket(self.burst, now)
            while len(self._buckets) > self.kinds:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(kind)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens < 1:
            if bucket.held == 0:
                bucket.held_since = record.created
            bucket.held += 1
            return False
        bucket.tokens -= 1
        notes = []
        if bucket.held:
            since = datetime.fromtimestamp(bucket.held_since, UTC).strftime("%H:%M:%SZ")
            notes.append(f"{bucket.held} more like this held back since {since}")
            bucket.held = 0
        if bucket.tokens < 1:
            notes.append(f"further lines like this: at most {self.rate * 60:g} a minute")
        if notes:
            record.msg = f"{record.getMessage()} [{'; '.join(notes)}]"
            record.args = None
        return True


def configure_logging(verbosity: int) -> None:
    """INFO by default, DEBUG from ``-vv`` on; JSON lines when flanneld asks for them; a flood of lines
    of one kind held back (:class:`FloodGate`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(FloodGate())
    if os.environ.get(LOG_FORMAT_ENV) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbosity > 1 else logging.INFO, handlers=[handler])


def shorten(value: object, limit: int = 64, *, quote: bool = True) -> str:
    """``repr(value)`` for a log line, cut to ``limit`` characters with the full length noted, so that a
    1 MB value from the store costs one short line: ``'aaaa…' (1048576 chars)``. ``quote=False`` for text
    we composed ourselves (a message naming shortened values): cut, but not quoted."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text) if quote else text
    return f"{text[:limit]!r}… ({len(text)} chars)" if quote else f"{text[:limit]}… ({len(text)} chars)"


def failure(exc: BaseException) -> str:
    """An unexpected exception for one log line instead of a traceback: its type, its message (shortened)
    and where it was raised (``OSError: [Errno 16] Device or resource busy at .../vxlan/device.py:88``)."""
    where = exc.__traceback__
    while where is not None and where.tb_next is not None:
        where = where.tb_next
    place = f" at {where.tb_frame.f_code.co_filename}:{where.tb_lineno}" if where is not None else ""
    return f"{type(exc).__name__}: {shorten(str(exc), 200, quote=False)}{place}"


def label(name: str, limit: int = 80) -> str:
    """A key or a name for a log line: as it is when short and printable (``10.244.3.0-24``, ``node-1``),
    else quoted and shortened like :func:`shorten` (a key ending in a newline shows as ``'...\\n'``)."""
    return (
        name
        if len(name) <= limit and name.isprintable() and name.strip() == name and name
        else shorten(name, limit)
    )


class LogOnce:
    """Remembers, per subject (a store key, a node), the last thing logged about it, so that a rejection
    is logged once per change of that subject and not again on every resync or report.

    Memory is bounded: at most ``capacity`` subjects, the least recently touched forgotten first (it may
    then be logged once more, which is the right failure mode); :meth:`forget` drops a subject that is gone.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._last: OrderedDict[Hashable, Hashable] = OrderedDict()

    def first(self, subject: Hashable, token: Hashable) -> bool:
        """True when ``token`` (e.g. a reason and a version) is new for ``subject``: log it now."""
        known = self._last.get(subject, _NOTHING)
        self._last[subject] = token
        self._last.move_to_end(subject)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
        return known != token

    def forget(self, subject: Hashable) -> None:
        self._last.pop(subject, None)

    def keep_only(self, subjects: Container[Hashable]) -> None:
        """Forget every subject not in ``subjects`` (e.g. the keys still rejected)."""
        for subject in [s for s in self._last if s not in subjects]:
            del self._last[subject]

    def __len__(self) -> int:
        return len(self._last)


_NOTHING = object()
