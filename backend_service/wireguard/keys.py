"""The node's WireGuard key file (the key itself: :class:`backend_service.wgkey.Key`).

The private key lives in a file (``<run dir>/wgkey``: flannel's ``/run/flannel/wgkey``; or ``$WIREGUARD_KEY_FILE``), made
with mode 0600 the first time and reused on every start, so that a restart never changes the public
key that peers know.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

from ..wgkey import Key, WireGuardKeyError

KEY_FILE_ENV = "WIREGUARD_KEY_FILE"


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
            return Key.parse(text.strip()), False
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
