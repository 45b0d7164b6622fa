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
from collections import OrderedDict
from collections.abc import Container, Hashable
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


def configure_logging(verbosity: int) -> None:
    """INFO by default, DEBUG from ``-vv`` on; JSON lines when flanneld asks for them."""
    handler = logging.StreamHandler(sys.stderr)
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
