"""Starting a child process without asyncio, so that ``flanneld`` starts both children before it loads
anything else (asyncio and the supervision modules are ~50 ms of CPU at start-up, which the children
would otherwise wait for); the running supervisor then takes each one over (:func:`supervisor.child.adopt`)
and starts every later incarnation the same way.

A child gets its own session (a terminal's ^C reaches only flanneld), ``/dev/null`` as stdin and a pipe
each for stdout and stderr, whose read ends flanneld keeps.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.privileges import Launch

CHILD_ENV = {"FLANNEL_LOG_FORMAT": "json"}
"""What flanneld adds to its children's environment so that they write records it can re-render
(:mod:`supervisor.logs`)."""


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The children's environment: flanneld's own, less its ``FLANNELD_*`` settings (flags carry those)."""
    return {k: v for k, v in environ.items() if not k.startswith("FLANNELD_")}


def environment(launch: Launch, base: Mapping[str, str]) -> dict[str, str]:
    """A child's environment: ``base`` (flanneld's, :func:`child_environment`), the variables every child
    gets, and its own secrets."""
    return {**base, **CHILD_ENV, **dict(launch.secrets)}


@dataclass(frozen=True)
class Spawned:
    """A child just started: its pid, a pidfd for it (waiting and signalling never reach a reused pid), and
    the read ends of its stdout and stderr pipes."""

    pid: int
    pidfd: int
    stdout: int
    stderr: int

    def abandon(self) -> None:
        """Stop it (SIGKILL to its process group) and reap it: flanneld gave up before taking it over."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        os.waitpid(self.pid, 0)
        for fd in (self.pidfd, self.stdout, self.stderr):
            os.close(fd)


def start(argv: tuple[str, ...], environ: Mapping[str, str]) -> Spawned:
    """Start ``argv`` (``argv[0]`` found on ``PATH`` unless it is a path) with exactly ``environ``."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            dict(environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setsid=True,
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return Spawned(pid, os.pidfd_open(pid), out_r, err_r)
