"""IPv4 text read fast: the strict dotted quad, as ``inet_pton`` takes it (and ``ipaddress`` too).

Both daemons read an IPv4 address and subnet per lease (10,000 leases at start-up); ``ipaddress`` parses
text octet by octet in Python, five times slower. These readers answer only for the strict spelling and
None for anything else, so that the caller's general parser decides (and names the error) as before:
what they accept, ``ipaddress`` accepts with the same value.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network


def address(text: str) -> IPv4Address | None:
    """``a.b.c.d`` (decimal, no leading zeros), else None."""
    try:
        return IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return None


def network(address_text: str, length_text: str) -> IPv4Network | None:
    """``a.b.c.d`` and a prefix length of one or two ASCII digits up to 32, host bits clear, else None."""
    if not 1 <= len(length_text) <= 2 or not length_text.isdigit() or not length_text.isascii():
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, address_text)
    except (OSError, ValueError):
        return None
    value, prefixlen = int.from_bytes(packed, "big"), int(length_text)
    if prefixlen > 32 or value & (0xFFFFFFFF >> prefixlen):
        return None
    return IPv4Network((value, prefixlen))


def cidr(text: str) -> IPv4Network | None:
    """``a.b.c.d/len`` as :func:`network` takes it, else None."""
    addr, slash, length = text.partition("/")
    return network(addr, length) if slash else None
