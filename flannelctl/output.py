"""Turning contract messages into rows, dicts and lines: the same data for ``-o text`` and ``-o json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from proto.flannel.v1 import lease_pb2

TEXT, JSON = "text", "json"


def now() -> str:
    """The current time, UTC, RFC 3339 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data with the proto field names and every scalar field present."""
    data: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return data


def lease_dict(lease: lease_pb2.Lease) -> dict[str, Any]:
    """A lease with every field present; ``expiration`` is null for a lease that never expires."""
    out = message_dict(lease)
    out.setdefault("expiration", None)
    return out


def lease_row(lease: lease_pb2.Lease) -> list[str]:
    return [
        lease.key,
        lease.subnet or "-",
        lease.ipv6_subnet or "-",
        lease.public_ip or lease.public_ipv6 or "-",
        lease.backend_type or "-",
        lease.node_name or "-",
    ]


LEASE_HEADER = ["KEY", "SUBNET", "IPV6 SUBNET", "PUBLIC IP", "BACKEND", "NODE"]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO = sys.stdout) -> None:
    """Columns aligned with two spaces between them, like kubectl's."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    out.writelines(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n"
        for row in (header, *rows)
    )


def dump(data: Any, out: TextIO = sys.stdout, *, lines: bool = False) -> None:
    """JSON: indented, or one object per line (``lines``) for streams."""
    if lines:
        out.write(json.dumps(data, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(data, indent=2) + "\n")
    out.flush()
