"""The delegate config saved per container in ``dataDir`` on ADD, read back on DEL and CHECK (flannel's
"scratch" net conf: the subnet may have changed since, DEL must release what ADD was given)."""

from __future__ import annotations

import os
from pathlib import Path

from flannel_cni.errors import IO_FAILURE, CniError


def save(data_dir: Path, container_id: str, config: bytes) -> None:
    """Write ``config`` to ``data_dir/container_id`` (0600, directory 0700), synced to disk."""
    path = data_dir / container_id
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, config)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot save the delegate config to {path}: {exc.strerror}") from None


def load(data_dir: Path, container_id: str, limit: int) -> bytes | None:
    """The saved config, or None when there is none."""
    path = data_dir / container_id
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot read the saved delegate config {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


def remove(data_dir: Path, container_id: str) -> None:
    try:
        (data_dir / container_id).unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # as flannel: a leftover file never fails a DEL that succeeded
