"""Exit codes: the contract between a child daemon (lease service, backend, a third-party backend) and
``flanneld``, which decides from them whether a restart can help.

====  ==========  ==================================================================  =====================
code  name        meaning                                                             flanneld
====  ==========  ==================================================================  =====================
0     OK          stopped because it was asked to (SIGTERM/SIGINT)                    --
1     FAILURE     an unexpected failure (a bug, an uncaught exception)                restarts with back-off
2     USAGE       a bad flag, variable or configuration value; restarting with the    stops, exits 2
                  same configuration gives the same error
3     PERMANENT   the host cannot run it as configured (no such interface, a          stops, exits 2
                  backend type it does not implement, a missing permission)
4     TRANSIENT   a condition that may heal by itself (a store or peer away too       restarts with back-off
                  long); restarting is the cure
====  ==========  ==================================================================  =====================

Any other code, and death by a signal, counts as FAILURE. On a fatal exit (USAGE, PERMANENT) flanneld
prints the child's last error line on its own stderr, stops the other child and exits USAGE.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """How a daemon ended; see the module docstring for what flanneld does with each."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    PERMANENT = 3
    TRANSIENT = 4

    @property
    def fatal(self) -> bool:
        """True when restarting with the same configuration cannot help."""
        return self in (ExitCode.USAGE, ExitCode.PERMANENT)


def classify(returncode: int | None) -> ExitCode:
    """The contract's meaning of a process's return code (negative: killed by a signal)."""
    if returncode is None or returncode < 0:
        return ExitCode.FAILURE
    try:
        return ExitCode(returncode)
    except ValueError:
        return ExitCode.FAILURE
