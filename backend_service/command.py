"""Run a helper program (``wg``, ``wireguard-go``, ``iptables-restore``, ``nft`` ...) to its end, with a timeout.

The one way the backend starts a program: never blocking the event loop, never leaving it running (on
a timeout or a cancellation it is killed and reaped), stdin closed unless given. Each caller turns the
result, a timeout (:class:`TimeoutError`) or a missing binary (:class:`FileNotFoundError`) into its own
error that names the command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    """A program that ran to its end: its exit status and what it printed."""

    returncode: int
    stdout: bytes
    stderr: bytes
    """Empty when stderr went to stdout (``merge_stderr``)."""

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: bytes | None = None,
    pass_fds: Sequence[int] = (),
    merge_stderr: bool = False,
    start_new_session: bool = False,
    env: Mapping[str, str] | None = None,
) -> Finished:
    """Run ``argv`` and wait for it; :class:`TimeoutError` (after killing it) when it takes over ``timeout``
    seconds. ``stdin`` is written to it (else it reads nothing); ``pass_fds`` stay open in it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        pass_fds=tuple(pass_fds),
        start_new_session=start_new_session,
        env=dict(env) if env is not None else None,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Finished(proc.returncode, out, err or b"")
