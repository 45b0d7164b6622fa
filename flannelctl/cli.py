"""flannelctl's flags and commands: ``flannelctl [--run-dir DIR] [-o text|json] COMMAND``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flannel_flags.argparse_bridge import OneLineParser, add_flags, add_version
from flannelctl import doctor, health, leases, status, watch
from flannelctl.connect import CtlError


def _common(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (given after it, they win); they are
    flannelctl's rows of the shared flag table."""
    p = OneLineParser(add_help=False)
    add_flags(p, "ctl", defaults=defaults)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="flannelctl",
        parents=[_common(True)],
        description="Look at this node's flannel-py lease service and backend through their unix sockets, and at "
        "the kernel of the current network namespace. Exit status: 0 ok, 1 a problem found (doctor) "
        "or a service unhealthy (status), 2 a usage or connection error.",
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common(False)
    for command in (leases, watch, status, doctor, health):
        command.COMMAND.add_to(sub, common)
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
