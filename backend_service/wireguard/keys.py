"""WireGuard keys: Curve25519 key pairs in WireGuard's base64 text form, and the node's key file.

The private key lives in a file (``<run dir>/wgkey``: flannel's ``/run/flannel/wgkey``; or ``$WIREGUARD_KEY_FILE``), made
with mode 0600 the first time and reused on every start, so that a restart never changes the public
key that peers know. The public key is derived here (X25519, RFC 7748) rather than by running
``wg pubkey``: one scalar multiplication at start, no subprocess and no new dependency.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KEY_FILE_ENV = "WIREGUARD_KEY_FILE"
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
        text = text.strip()
        if len(text) != 44 or not text.endswith("="):
            raise WireGuardKeyError(
                f"not a WireGuard key (44 base64 characters ending in '='): {text[:60]!r}"
            )
        try:
            return cls(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise WireGuardKeyError(f"not a WireGuard key (bad base64): {text[:60]!r}") from exc

    @classmethod
    def generate(cls) -> Key:
        """A new private key (clamped, as ``wg genkey`` makes them)."""
        k = bytearray(secrets.token_bytes(KEY_LEN))
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


def key_file(run_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The key file: ``$WIREGUARD_KEY_FILE``, else ``wgkey`` in the run dir (flannel's ``/run/flannel/wgkey``
    with the default ``--run-dir``)."""
    env = os.environ if environ is None else environ
    return Path(env[KEY_FILE_ENV]) if env.get(KEY_FILE_ENV) else run_dir / "wgkey"


def load_or_create(path: Path) -> tuple[Key, bool]:
    """The private key in ``path``, made (mode 0600, never through a symlink) when absent.
    (key, True when it was created now)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WireGuardKeyError(
                f"{path}: is a symlink; refusing to read a private key through it"
            ) from exc
        raise WireGuardKeyError(f"{path}: cannot read the private key: {exc.strerror}") from exc
    else:
        with os.fdopen(fd, "r") as f:
            text = f.read(1024)
        try:
            return Key.parse(text), False
        except WireGuardKeyError as exc:
            raise WireGuardKeyError(f"{path}: {exc}") from None
    key = Key.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # another process made it in between: use theirs
        return load_or_create(path)
    except OSError as exc:
        raise WireGuardKeyError(f"{path}: cannot create the private key: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(f"{key}\n")
        f.flush()
        os.fsync(f.fileno())
    return key, True
