"""Value parsers for flags: text in, a typed value out, or :class:`BadValue` saying what was expected.

Each parser is a plain function of one string, so the same one serves the command line, the
``FLANNELD_*`` environment and flannelctl's argparse options. Booleans follow Go's
``strconv.ParseBool`` (flannel's reference), nothing looser.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from urllib.parse import urlsplit

Parser = Callable[[str], object]

GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class BadValue(ValueError):
    """A value a parser cannot take; the message says what was expected and shows what it got."""


def shown(text: str, *, quote: bool = True) -> str:
    """A value for a message: quoted, and shortened (with its length) when it is long."""
    if len(text) <= 80:
        return repr(text) if quote else text
    return (
        f"{text[:60]!r}... ({len(text)} characters)" if quote else f"{text[:60]}... ({len(text)} characters)"
    )


_shown = shown


def go_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: 1 t T TRUE true True / 0 f F FALSE false False."""
    if text in GO_TRUE:
        return True
    if text in GO_FALSE:
        return False
    raise BadValue(f"expected a boolean (true, false, 1, 0, t, f), got {_shown(text)}")


def text(value: str) -> str:
    """Any string, as given (empty included)."""
    return value


def nonempty(value: str) -> str:
    if not value.strip():
        raise BadValue("expected a non-empty value")
    return value


_GO_INT = re.compile(
    r"([+-]?)(0[xX][0-9a-fA-F_]{1,20}|0[bB][01_]{1,70}|0[oO]?[0-7_]{1,30}|[1-9][0-9_]{0,20}|0)"
)


def go_int(value: str) -> int:
    """An integer as Go's ``strconv.ParseInt(s, 0, 64)`` reads it (flannel's int flags): decimal,
    ``0x`` hex, ``0b`` binary, ``0o`` or a leading ``0`` octal, underscores only after a prefix."""
    match = _GO_INT.fullmatch(value)
    if not match:
        raise BadValue(f"expected an integer, got {_shown(value)}")
    sign, digits = match.groups()
    if "_" in digits and ("__" in digits or digits.endswith("_")):
        raise BadValue(f"expected an integer, got {_shown(value)}")
    digits = digits.replace("_", "")
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "0123456789":
        digits = "0o" + digits[1:]
    number = int(digits, 0)
    return -number if sign == "-" else number


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in Go's syntax (see :func:`go_int`), optionally bounded (inclusive)."""

    def parse(value: str) -> int:
        number = go_int(value)
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            bound = (
                f"from {lo} to {hi}"
                if lo is not None and hi is not None
                else f">= {lo}"
                if lo is not None
                else f"<= {hi}"
            )
            raise BadValue(f"expected an integer {bound}, got {_shown(value)}")
        return number

    return parse


_DURATION = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})\s*(ms|s|m|h)?\s*")


def seconds(value: str) -> float:
    """Seconds as a number, or Go-style ``500ms`` / ``10s`` / ``2m`` / ``1h``."""
    match = _DURATION.fullmatch(value)
    if not match:
        raise BadValue(f"expected a duration in seconds (e.g. 10, 0.5, 500ms, 2m), got {_shown(value)}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def positive_seconds(value: str) -> float:
    number = seconds(value)
    if number <= 0:
        raise BadValue(f"expected a duration greater than zero, got {_shown(value)}")
    return number


def ipv4(value: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError:
        raise BadValue(f"expected an IPv4 address, got {_shown(value)}") from None


def ipv6(value: str) -> IPv6Address:
    try:
        return IPv6Address(value)
    except ValueError:
        raise BadValue(f"expected an IPv6 address, got {_shown(value)}") from None


def ip_address(value: str) -> IPv4Address | IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise BadValue(f"expected an IP address, got {_shown(value)}") from None


def regex(value: str) -> str:
    """A regular expression that compiles; kept as text (the resolver compiles it where it is used)."""
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as exc:
        raise BadValue(f"expected a regular expression, got {_shown(value)}: {exc}") from None
    return value


def command(value: str) -> tuple[str, ...]:
    """A command line, split as a POSIX shell would."""
    try:
        words = tuple(shlex.split(value))
    except ValueError as exc:
        raise BadValue(f"expected a command line, got {_shown(value)}: {exc}") from None
    if not words:
        raise BadValue("expected a command line, got an empty one")
    return words


def host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise BadValue(f"expected HOST:PORT (e.g. 127.0.0.1:9101), got {_shown(value)}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            listed = " or ".join(repr(o) for o in options)
            raise BadValue(f"expected {listed}, got {_shown(value)}")
        return value

    return parse


def http_url(value: str) -> str:
    """An ``http://`` or ``https://`` URL of a server: a host, an optional numeric port, no path."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise BadValue(f"expected a URL like https://HOST:PORT, got {_shown(value)}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadValue(f"expected a URL starting with http:// or https://, got {_shown(value)}")
    if not parts.hostname:
        raise BadValue(f"expected a URL with a host, got {_shown(value)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadValue(f"expected a URL with nothing after the host and port, got {_shown(value)}")
    del port
    return value.strip()


def url_list(value: str) -> tuple[str, ...]:
    """A comma-separated list of ``http(s)://HOST[:PORT]`` URLs (flannel's ``--etcd-endpoints``)."""
    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    if not urls:
        raise BadValue("expected at least one URL like http://HOST:2379, got an empty list")
    for url in urls:
        http_url(url)
    return urls


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise BadValue(f"expected an existing file, got {_shown(value)}")
    return path


def path(value: str) -> Path:
    return Path(nonempty(value))


def etcd_prefix(value: str) -> str:
    """An absolute etcd key prefix, kept without a trailing slash."""
    if not value.startswith("/"):
        raise BadValue(f"expected a key prefix starting with /, got {_shown(value)}")
    return value.rstrip("/")  # "/" becomes "": the keys are then "/config", "/subnets/..."
