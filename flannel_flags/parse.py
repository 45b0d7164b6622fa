"""Go's flag syntax over the flag table, then ``FLANNELD_*`` variables, then defaults.

What Go's ``flag`` package (and so flannel) accepts, and nothing more: ``-flag`` and ``--flag``;
``-flag value`` and ``-flag=value``; a boolean is ``-flag`` or ``-flag=<ParseBool>`` and never takes
the next word; no abbreviations; parsing stops at ``--`` or at the first word that is not a flag.
A flag given on the command line wins over its variable (``--etcd-prefix`` ↔ ``FLANNELD_ETCD_PREFIX``),
which wins over the default; an empty variable counts as unset, as in flannel. Variables with the
prefix that no flag has are reported once, as a notice, never an error.

Every mistake is one :class:`UsageError` whose message names the flag or variable, the value and
what was expected; ``-h``/``--help`` and ``--version`` raise :class:`Done` with the text to print.
"""

from __future__ import annotations

import difflib
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flannel_flags.table import BY_NAME, ENV_PREFIX, FLAGS, OTHER_VARIABLES, Child, Flag, Process, flags_of
from flannel_flags.values import BadValue, go_bool
from flannel_flags.values import shown as _shown

PACKAGE = "flannel-py"


class UsageError(ValueError):
    """A command line or environment that cannot be used; the message is the one line to print."""


class Done(Exception):
    """``--help`` or ``--version``: print :attr:`text` on stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def report(ended: Done | UsageError, prog: str, usage_status: int) -> int:
    """Print what ended the parse early and return the exit status: ``--help`` or ``--version`` text on
    stdout and 0, or ``prog: <the error>`` on stderr and ``usage_status``."""
    if isinstance(ended, Done):
        print(ended.text)
        return 0
    print(f"{prog}: {ended}", file=sys.stderr)
    return usage_status


def version() -> str:
    """The installed package's version."""
    import importlib.metadata  # only for --version: it costs start-up time every daemon would pay

    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Parsed:
    """The typed value of every flag a process takes, and which ones were given."""

    process: Process
    values: Mapping[str, Any]
    """By flag name (``etcd-endpoints``): the given value, else the table's default."""
    given: Mapping[str, str | tuple[str, ...] | int]
    """By flag name, for the flags given (command line or environment): the text as given (a tuple of
    texts for a list flag, the level for ``-v``), so that it can be passed on unchanged."""
    positionals: tuple[str, ...] = ()
    notices: tuple[str, ...] = field(default=())
    """One line each: unknown ``FLANNELD_*`` variables, flags accepted without effect."""

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def child_args(self, child: Child) -> list[str]:
        """The flags flanneld passes to ``child``: those routed to it that were given, as given."""
        args: list[str] = []
        for flag in FLAGS:
            if child not in flag.children or flag.name not in self.given:
                continue
            name = "--" + (flag.child_name or flag.name)
            raw = self.given[flag.name]
            if flag.kind == "bool":
                value = self.values[flag.name]
                if value:
                    args.append(name)
                elif flag.default:  # false where the child's default is true; false alone is the default
                    args.append(f"{name}=false")
            elif flag.kind == "level" and isinstance(raw, int):
                args += ["-" + (flag.child_name or flag.name)] * raw
            elif flag.kind == "list" and isinstance(raw, tuple):
                for item in raw:
                    args += [name, str(item)]
            else:
                args += [name, str(raw)]
        return args


def _suggest(word: str, candidates: Sequence[str]) -> str:
    if len(word) > 100:
        return ""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _convert(flag: Flag, text: str, where: str) -> Any:
    try:
        return flag.parse(text)
    except BadValue as exc:
        raise UsageError(f"invalid value for {where}: {exc}") from None


def parse(
    process: Process,
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    prog: str,
    description: str = "",
    positionals: bool = False,
) -> Parsed:
    """Parse ``argv`` and ``environ`` for ``process`` (see the module docstring)."""
    table = {name: flag for name, flag in BY_NAME.items() if process in flag.takers}
    values: dict[str, Any] = {}
    given: dict[str, Any] = {}
    words = list(argv)
    rest: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            rest = words[i:]
            break
        if len(word) < 2 or not word.startswith("-"):
            rest = words[i - 1 :]
            break
        body = word[2:] if word.startswith("--") else word[1:]
        if not body or body[0] in "-=":
            raise UsageError(f"bad flag syntax: {_shown(word)}")
        name, eq, text = body.partition("=")
        dashes = word[: len(word) - len(body)]
        shown = dashes + name if len(name) <= 100 else _shown(dashes + name)
        if name in ("h", "help") and name not in table:
            raise Done(help_text(process, prog, description))
        if name == "version" and name not in table:
            if eq and not _convert(_VERSION, text, shown):
                continue
            raise Done(version())
        flag = table.get(name)
        if flag is None:
            known = ["-" * len(dashes) + n for n, f in table.items() if not f.hidden]
            raise UsageError(f"unknown flag {shown}{_suggest(shown, known)}")
        key = flag.name
        if flag.kind == "bool":
            values[key] = _convert(flag, text, shown) if eq else True
            given[key] = text if eq else "true"
        elif flag.kind == "level":
            if eq:
                values[key] = _convert(flag, text, shown)
            elif i < len(words) and re.fullmatch(r"[0-9]+", words[i]):
                values[key] = _convert(flag, words[i], shown)
                i += 1
            else:  # a bare -v counts one more (-v -v), as our daemons always took it
                values[key] = _convert(flag, str(values.get(key, 0) + 1), shown)
            given[key] = values[key]
        else:
            if not eq:
                if i >= len(words):
                    raise UsageError(f"flag needs an argument: {shown} ({flag.metavar})")
                text = words[i]
                i += 1
            value = _convert(flag, text, shown)
            if flag.kind == "list":
                values[key] = (*values.get(key, ()), value)
                given[key] = (*given.get(key, ()), text)
            else:
                values[key] = value
                given[key] = text

    if rest and not positionals:
        raise UsageError(f"unexpected argument {_shown(rest[0])}: {prog} takes only flags")

    for flag in flags_of(process):
        if flag.name in given:
            continue
        raw = environ.get(flag.env, "")
        if raw == "":
            continue
        where = f"{flag.env} (flag --{flag.name})"
        if flag.kind == "list":
            parts = [p.strip() for p in raw.split(",")] if flag.env_split else [raw]
            parts = [p for p in parts if p]
            values[flag.name] = tuple(_convert(flag, p, where) for p in parts)
            given[flag.name] = tuple(parts)
        else:
            values[flag.name] = _convert(flag, raw, where)
            given[flag.name] = values[flag.name] if flag.kind == "level" else raw

    notices = [*_unknown_variables(process, environ)]
    for flag in flags_of(process):
        if flag.no_effect and flag.name in given:
            notices.append(f"--{flag.name} is accepted as flannel's and has no effect: {flag.no_effect}")
        values.setdefault(flag.name, flag.default)
    return Parsed(process, values, given, tuple(rest), tuple(notices))


_VERSION = Flag(
    "version", go_bool, False, "print the version and exit", frozenset(), kind="bool", flannel=True
)


def _unknown_variables(process: Process, environ: Mapping[str, str]) -> list[str]:
    """One notice naming every ``FLANNELD_*`` variable no flag of ``process`` reads.

    flanneld knows its own flags' variables; a child run alone also keeps quiet about variables of
    the other child's flags (a DaemonSet may give both containers one set of variables)."""
    scope = flags_of(process) if process == "flanneld" else FLAGS
    known = {f.env for f in scope} | OTHER_VARIABLES
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
    if not unknown:
        return []
    stems = sorted(k.removeprefix(ENV_PREFIX) for k in known)
    named = ", ".join(
        _shown(k, quote=False)
        + _suggest(k.removeprefix(ENV_PREFIX), stems).replace("mean ", "mean " + ENV_PREFIX)
        for k in unknown[:_MAX_NAMED]
    )
    more = f" and {len(unknown) - _MAX_NAMED} more" if len(unknown) > _MAX_NAMED else ""
    return [f"ignoring environment variables that are not flags of this program: {named}{more}"]


_MAX_NAMED = 20


def help_text(process: Process, prog: str, description: str) -> str:
    """``--help``: every flag the process takes, with its default and environment variable."""
    lines = [f"usage: {prog} [flags]", ""]
    if description:
        lines += [textwrap.fill(description, width=100), ""]
    lines.append(
        textwrap.fill(
            "Flags take one dash or two (-iface eth0, --iface=eth0); booleans are -flag or -flag=true|false|1|0|t|f. "
            "Each flag is also read from the environment variable shown; a flag on the command line wins.",
            width=100,
        )
    )
    lines.append("")
    for flag in flags_of(process):
        if flag.hidden:
            continue
        head = f"  --{flag.name}" + ("" if flag.kind == "bool" else f" {flag.metavar}")
        info = [flag.help]
        default = flag.shown_default()
        if default:
            info.append(f"default {default}")
        if process == "flanneld" and flag.children:
            info.append(
                "for the "
                + " and the ".join("lease service" if c == "lease" else "backend" for c in flag.children)
            )
        if flag.flannel:
            info.append("flannel's" if not flag.no_effect else "flannel's, no effect here")
        lines.append(head)
        lines.append(
            textwrap.fill(
                f"{'; '.join(info)} [{flag.env}]",
                width=100,
                initial_indent=" " * 8,
                subsequent_indent=" " * 8,
            )
        )
    lines.append("  --version")
    lines.append("        print the version and exit")
    return "\n".join(lines)
