"""``python -m flannelctl`` and the ``flannelctl`` console script."""

from __future__ import annotations

import sys

from flannelctl.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
