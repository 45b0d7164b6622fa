"""One flanneld per run dir: an exclusive ``flock`` on ``<run-dir>/flanneld.lock``, held for flanneld's life.

A second flanneld on the same run dir fails at once, naming the first one's pid (written into the lock
file), and never touches the first one's sockets or files: the lock is taken before anything in the run
dir is prepared. The kernel drops the lock when the holder exits, however it exits, so a stale file
never blocks a new start. The file is opened without following symlinks and is not inherited by children.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

LOCK_FILE = "flanneld.lock"


class RunDirBusy(RuntimeError):
    """Another flanneld holds the run dir."""


class RunDirUnsafe(RuntimeError):
    """The run dir (or its lock file) is not what flanneld creates: a symlink or another kind of file."""


def open_run_dir(run_dir: Path) -> int:
    """Create ``run_dir`` if needed (mode 0700 until prepared) and open it, refusing a symlink."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(run_dir, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        st = os.lstat(run_dir)
        if stat.S_ISLNK(st.st_mode):
            raise RunDirUnsafe(f"--run-dir {run_dir} is a symlink; give the real directory") from exc
        raise RunDirUnsafe(f"--run-dir {run_dir} is not a directory: {exc}") from exc
    return fd


class RunLock:
    """The lock on a run dir; :meth:`release` (or process exit) frees it."""

    def __init__(self, run_dir: Path, dir_fd: int) -> None:
        self.path = run_dir / LOCK_FILE
        self._fd = self._open(dir_fd)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self._fd)
            raise RunDirBusy(
                f"--run-dir {run_dir} is in use by another flanneld (pid {holder}); "
                "stop it first or give another --run-dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def _open(self, dir_fd: int) -> int:
        """Open the lock file; one that flanneld did not create (another owner: the lease user could
        have made it to hold the lock) is replaced."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(LOCK_FILE, flags, 0o600, dir_fd=dir_fd)
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                return fd
            os.close(fd)
            os.unlink(LOCK_FILE, dir_fd=dir_fd)
            return os.open(LOCK_FILE, flags | os.O_EXCL, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise RunDirUnsafe(f"cannot open the lock file {self.path} (not a regular file?): {exc}") from exc

    def _holder(self) -> str:
        """The holder's pid; it writes it right after locking, so give it a moment."""
        for _ in range(20):
            try:
                text = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                text = ""
            if text.isdigit():
                return text
            time.sleep(0.01)
        return "unknown"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
