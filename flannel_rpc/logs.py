"""One log format for every daemon: a line per event on stderr, which flanneld tags per child."""

from __future__ import annotations

import logging
import sys


def configure_logging(verbosity: int) -> None:
    """INFO by default, DEBUG from ``-vv`` on."""
    logging.basicConfig(level=logging.DEBUG if verbosity > 1 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
