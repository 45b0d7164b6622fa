"""One decoder for every untrusted JSON document, with explicit bounds.

Every document another node or an operator wrote (etcd lease values, Node annotations, net-conf.json
and the etcd config, backend data in AcquireLease requests, backend data in streamed leases) goes
through :func:`decode_json`. It returns the decoded value or raises :class:`Rejected` with a
machine-readable ``reason``; it raises nothing else, whatever the input (``RecursionError``,
``MemoryError``, ``ValueError`` from Python's integer digit limit, ``UnicodeError``, ...).

The checks run before ``json.loads`` so that the parser never recurses deeper than ``max_depth``
(a bracket-depth scan outside strings) and never sees a longer number than ``max_int_digits``.

Reasons (``Rejected.reason``):

- ``TOO_LARGE``: more than ``max_bytes`` bytes.
- ``NOT_UTF8``: not UTF-8 text.
- ``TOO_DEEP``: arrays/objects nested deeper than ``max_depth``.
- ``STRING_TOO_LONG``: a string longer than ``max_string`` characters (as written, escapes included).
- ``NUMBER_TOO_LONG``: an integer with more than ``max_int_digits`` digits, or a longer number.
- ``NUMBER_NOT_FINITE``: ``NaN``, ``Infinity`` or a float that overflows.
- ``NOT_JSON``: not JSON at all.
- ``UNDECODABLE``: anything else went wrong (never expected; named rather than raised).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

TOO_LARGE = "TOO_LARGE"
NOT_UTF8 = "NOT_UTF8"
TOO_DEEP = "TOO_DEEP"
STRING_TOO_LONG = "STRING_TOO_LONG"
NUMBER_TOO_LONG = "NUMBER_TOO_LONG"
NUMBER_NOT_FINITE = "NUMBER_NOT_FINITE"
NOT_JSON = "NOT_JSON"
UNDECODABLE = "UNDECODABLE"

REASONS = (
    TOO_LARGE,
    NOT_UTF8,
    TOO_DEEP,
    STRING_TOO_LONG,
    NUMBER_TOO_LONG,
    NUMBER_NOT_FINITE,
    NOT_JSON,
    UNDECODABLE,
)

KIB = 1024
MIB = 1024 * KIB


class Refused(ValueError):
    """Untrusted input refused: ``reason`` is a machine-readable code, ``message`` names what, for humans."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class Rejected(Refused):
    """An untrusted document refused by :func:`decode_json`; ``reason`` is one of :data:`REASONS`."""


@dataclass(frozen=True)
class JsonLimits:
    """Bounds of one kind of document."""

    max_bytes: int  #: the whole document, in bytes of UTF-8
    max_depth: int = 32  #: nesting of arrays and objects
    max_int_digits: int = 40  #: digits of one integer (Python's own limit is 4,300; ours is far lower)
    max_string: int = 0  #: characters of one string as written; 0: as large as the document

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_depth <= 0 or self.max_int_digits <= 0 or self.max_string < 0:
            raise ValueError(f"JSON limits must be positive: {self}")


#: A lease value in etcd: etcd's own request limit is 1.5 MiB; backend data may be any JSON.
LEASE_VALUE = JsonLimits(max_bytes=MIB + MIB // 2)
#: One Node annotation value: Kubernetes allows 256 KiB for all annotations of an object together.
ANNOTATION = JsonLimits(max_bytes=256 * KIB)
#: The network config (etcd ``<prefix>/config`` or net-conf.json).
NETWORK_CONFIG = JsonLimits(max_bytes=MIB)
#: Backend data in an AcquireLease request (it must fit in a lease value with the other fields).
BACKEND_DATA = JsonLimits(max_bytes=MIB)

# A JSON string as written: quotes around characters that are not quotes or backslashes, or escapes.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def decode_json(data: bytes | str, limits: JsonLimits, what: str = "document") -> Any:
    """The JSON value of ``data`` within ``limits``; raises :class:`Rejected` and nothing else."""
    try:
        return _decode(data, limits, what)
    except Rejected:
        raise
    except RecursionError as exc:  # not expected after the depth scan: named all the same
        raise Rejected(TOO_DEEP, f"{what} nests too deeply ({type(exc).__name__})") from None
    except MemoryError:
        raise Rejected(TOO_LARGE, f"{what} does not fit in memory") from None
    except Exception as exc:  # noqa: BLE001 - any failure of any kind is a named rejection
        raise Rejected(UNDECODABLE, f"{what} cannot be decoded ({type(exc).__name__})") from None


def _decode(data: bytes | str, limits: JsonLimits, what: str) -> Any:
    size = len(data) if isinstance(data, bytes) else _utf8_size(data, limits.max_bytes)
    if size > limits.max_bytes:
        raise Rejected(TOO_LARGE, f"{what} is {size} bytes, more than the limit of {limits.max_bytes}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(NOT_UTF8, f"{what} is not UTF-8 (byte {exc.start})") from None
    else:
        text = data
        if _has_surrogates(text):
            raise Rejected(NOT_UTF8, f"{what} holds unpaired surrogates")
    max_string = limits.max_string or limits.max_bytes
    if len(text) > max_string:
        longest = max((m.end() - m.start() - 2 for m in _STRING.finditer(text)), default=0)
        if longest > max_string:
            raise Rejected(
                STRING_TOO_LONG,
                f"{what} holds a string of {longest} characters, more than the limit of {max_string}",
            )
    if text.count("[") + text.count("{") > limits.max_depth:
        depth = _max_depth(text)
        if depth > limits.max_depth:
            raise Rejected(
                TOO_DEEP, f"{what} nests {depth} levels deep, more than the limit of {limits.max_depth}"
            )

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > limits.max_int_digits:
            raise Rejected(
                NUMBER_TOO_LONG,
                f"{what} holds an integer of {len(digits.lstrip('-'))} digits, "
                f"more than the limit of {limits.max_int_digits}",
            )
        return int(digits)

    def parse_float(spelling: str) -> float:
        if len(spelling) > 2 * limits.max_int_digits + 10:
            raise Rejected(NUMBER_TOO_LONG, f"{what} holds a number of {len(spelling)} characters")
        value = float(spelling)
        if not math.isfinite(value):
            raise Rejected(NUMBER_NOT_FINITE, f"{what} holds the number {spelling[:40]}, which overflows")
        return value

    def parse_constant(name: str) -> float:
        raise Rejected(NUMBER_NOT_FINITE, f"{what} holds {name}, which JSON does not allow")

    try:
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except json.JSONDecodeError as exc:
        raise Rejected(
            NOT_JSON, f"{what}: not valid JSON (not JSON at character {exc.pos}: {exc.msg})"
        ) from None


def _utf8_size(text: str, limit: int) -> int:
    if len(text) > limit:  # at least one byte a character: too large without encoding it
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _max_depth(text: str) -> int:
    """How deep arrays and objects nest, counting only brackets outside strings; no recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub('""', text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest
