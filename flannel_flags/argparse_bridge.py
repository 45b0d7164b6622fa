"""The table's rows as argparse options, for flannelctl (which has sub-commands), with one-line errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from flannel_flags.parse import version
from flannel_flags.table import Flag, Process, flags_of
from flannel_flags.values import BadValue


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser that never abbreviates and reports a usage error as one line on stderr."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _argparse_type(flag: Flag) -> Any:
    def convert(text: str) -> Any:
        try:
            return flag.parse(text)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = flag.metavar.lower()
    return convert


def add_flags(parser: argparse.ArgumentParser, process: Process, *, defaults: bool = True) -> None:
    """Add every row ``process`` takes; without ``defaults`` an option left out stays unset (so that the
    same options may be given again after a sub-command's name and win there)."""
    for flag in flags_of(process):
        names = [f"--{flag.name}", *([flag.short] if flag.short else [])]
        default = flag.default if defaults else argparse.SUPPRESS
        shown = flag.shown_default()
        parser.add_argument(
            *names,
            dest=flag.dest,
            type=_argparse_type(flag),
            default=default,
            metavar=flag.metavar,
            help=flag.help + (f" (default {shown})" if shown else ""),
        )


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=version(), help="print the version and exit")
