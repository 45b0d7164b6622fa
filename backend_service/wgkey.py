"""A WireGuard key: 32 bytes, written as WireGuard writes it (44 characters of standard base64).

:meth:`Key.parse` is the one parser of key text in the backend: the node's key file
(:mod:`backend_service.wireguard.keys`), the PSK of the network config (:mod:`backend_service.config`)
and the peers' public keys in their leases (:mod:`backend_service.leases`). It accepts exactly what
``wg`` accepts: the canonical base64 of 32 bytes, nothing around it. The public key of a private key is
derived here (X25519, RFC 7748) rather than by running ``wg pubkey``: one scalar multiplication at
start, no subprocess and no new dependency.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import TypeGuard

KEY_LEN = 32

_P = 2**255 - 19
_A24 = 121665


class WireGuardKeyError(ValueError):
    """A key that is not 32 bytes of standard base64, or a key file that cannot be used."""


def _clamp(scalar: bytes) -> int:
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(k, "little")


def x25519(scalar: bytes, u_point: bytes) -> bytes:
    """RFC 7748 X25519: the Montgomery ladder over Curve25519, constant in its sequence of operations."""
    k = _clamp(scalar)
    u = int.from_bytes(u_point, "little") & ((1 << 255) - 1)
    x1, x2, z2, x3, z3, swap = u, 1, 0, u, 1, 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, d = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = d * a % _P, c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


@dataclass(frozen=True)
class Key:
    """32 key bytes; ``str()`` is WireGuard's base64 form (44 characters)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise WireGuardKeyError(f"a WireGuard key is {KEY_LEN} bytes, not {len(self.raw)}")

    @classmethod
    def parse(cls, text: str) -> Key:
        """A key from its base64 text (as ``wg`` prints it and flannel publishes it)."""
        if len(text) != 44 or not text.endswith("="):
            raise WireGuardKeyError(
                f"not a WireGuard key (44 base64 characters ending in '='): {text[:60]!r}"
            )
        try:
            key = cls(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise WireGuardKeyError(f"not a WireGuard key (bad base64): {text[:60]!r}") from exc
        if str(key) != text:
            # 32 bytes are 43 base64 digits, the last holding 4 bits; wg refuses a key with the other 2 set.
            raise WireGuardKeyError(f"not a WireGuard key (its last base64 digit is not canonical): {text!r}")
        return key

    @classmethod
    def generate(cls) -> Key:
        """A new private key (clamped, as ``wg genkey`` makes them)."""
        k = bytearray(os.urandom(KEY_LEN))  # what secrets.token_bytes reads (secrets loads OpenSSL, for hmac)
        k[0] &= 248
        k[31] = (k[31] & 127) | 64
        return cls(bytes(k))

    def public(self) -> Key:
        """The public key of this private key."""
        return Key(x25519(self.raw, (9).to_bytes(32, "little")))

    def hex(self) -> str:
        """Lower-case hex, as the UAPI protocol writes keys."""
        return self.raw.hex()

    def __str__(self) -> str:
        return base64.b64encode(self.raw).decode()

    def __repr__(self) -> str:  # never print a private key by accident
        return "Key(...)"


def is_key(text: object) -> TypeGuard[str]:
    """Whether ``text`` is a WireGuard key as :meth:`Key.parse` (and ``wg``) accept it; never raises, so a
    secret in ``text`` never reaches an exception message."""
    if not isinstance(text, str):
        return False
    try:
        Key.parse(text)
    except WireGuardKeyError:
        return False
    return True
