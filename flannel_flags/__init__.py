"""The one flag table of every flannel-py console script, and the parsers built from it.

``table.FLAGS`` holds each flag once (name, value parser, default, help, the processes that take it);
``parse.parse`` reads a command line in Go's flag syntax and the ``FLANNELD_*`` environment for one
process; ``argparse_bridge`` adds the same rows to an argparse parser (flannelctl). It imports nothing
of the daemons.
"""

from flannel_flags.parse import Done, Parsed, UsageError, help_text, parse, report, version
from flannel_flags.table import FLAGS, Flag, flags_of
from flannel_flags.values import BadValue

__all__ = [
    "FLAGS",
    "BadValue",
    "Done",
    "Flag",
    "Parsed",
    "UsageError",
    "flags_of",
    "help_text",
    "parse",
    "report",
    "version",
]
