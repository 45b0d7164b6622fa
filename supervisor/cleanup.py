"""``flanneld cleanup [--dry-run]``: run the backend's own cleanup with the backend's privileges.

The supervisor never touches the kernel itself: it starts ``flannel-backend cleanup`` (or the
``--backend-cmd`` program with ``cleanup``) under the same launcher as the running backend (uid 0,
CAP_NET_ADMIN and CAP_NET_RAW only), passes its output through and returns its exit status.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence

from supervisor import privileges


def command(dry_run: bool, backend_cmd: Sequence[str] = ()) -> list[str]:
    """The full command line: the backend launcher, the backend program, ``cleanup [--dry-run]``."""
    program = list(backend_cmd) or [sys.executable, "-m", "backend_service"]
    return [*privileges.backend_launcher(None), *program, "cleanup", *(["--dry-run"] if dry_run else [])]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="flanneld cleanup",
        description="Remove every device, route, neighbour, FDB entry and firewall rule flannel-py created "
        "on this node (through the backend, with its privileges). A normal stop never does this.",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be removed; change nothing")
    parser.add_argument("--backend-cmd", default=None, help="the backend program, as given to flanneld")
    args = parser.parse_args(argv)
    try:
        return subprocess.run(
            command(args.dry_run, shlex.split(args.backend_cmd or "")), check=False
        ).returncode
    except OSError as exc:
        print(f"flanneld cleanup: cannot run the backend: {exc}", file=sys.stderr)
        return 1
