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
from datetime import UTC, datetime

LOG_FORMAT_ENV = "FLANNEL_LOG_FORMAT"
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


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
