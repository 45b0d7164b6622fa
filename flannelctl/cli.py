"""flannelctl's flags and commands: ``flannelctl [--run-dir DIR] [-o text|json] COMMAND``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from flannelctl import doctor, leases, status, watch
from flannelctl.connect import CtlError
from flannelctl.output import JSON, TEXT

DEFAULT_RUN_DIR = Path("/run/flannel")


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (given after it, they win)."""
    p = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--run-dir", type=Path, default=default(DEFAULT_RUN_DIR),
                   help="where lease.sock and backend.sock are (default /run/flannel)")
    p.add_argument("-o", "--output", choices=(TEXT, JSON), default=default(TEXT),
                   help="text for people, json for machines (default text)")
    p.add_argument("--timeout", type=float, default=default(5.0),
                   help="seconds to wait for each call (default 5)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flannelctl", parents=[_common(True)],
        description="Look at this node's flannel-py lease service and backend through their unix sockets, and at "
                    "the kernel of the current network namespace. Exit status: 0 ok, 1 a problem found (doctor) "
                    "or a service unhealthy (status), 2 a usage or connection error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common(False)
    for command in (leases, watch, status, doctor):
        command.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.run(args))
    except CtlError as exc:
        print(f"flannelctl: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `flannelctl watch | head`
        sys.stderr.close()
        return 0
