"""systemd's notification protocol (``Type=notify``), spoken over a plain unix datagram socket.

With ``$NOTIFY_SOCKET`` set (a path, or ``@name`` for an abstract socket), flanneld sends:

* ``READY=1`` once both children answer SERVING for the first time (``systemctl start`` returns then);
* ``STATUS=lease-service: SERVING, backend: STARTING`` whenever a child's health changes;
* ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` (``WatchdogSec=``) while flanneld's own loop runs and
  it is not stopping, so that a stalled supervisor is restarted by systemd (the children's health is
  flanneld's job: it probes and restarts them itself);
* ``STOPPING=1`` when it begins to stop.

Without ``$NOTIFY_SOCKET`` all of this is off. ``$WATCHDOG_PID``, when set, must be flanneld's pid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

POLL = 0.1
"""Seconds between two looks at the children's health (READY=1 follows within this)."""


class Notifier:
    """Sends ``KEY=VALUE`` datagrams to systemd; does nothing when flanneld was not started by it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog = int(usec) / 1e6 / 2
        self._sock: socket.socket | None = None
        self._failed = False
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> None:
        """One datagram of ``KEY=VALUE`` lines; a failure is logged once and otherwise ignored."""
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd on NOTIFY_SOCKET %r: %s", self.address, exc)
                self._failed = True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def run(
    notifier: Notifier, statuses: Callable[[], Mapping[str, str]], stopping: Callable[[], bool]
) -> None:
    """READY/STATUS/WATCHDOG until cancelled; the caller sends STOPPING=1."""
    if not notifier.enabled:
        return
    loop = asyncio.get_running_loop()
    ready = False
    last_status = ""
    next_beat = loop.time()
    while True:
        now = loop.time()
        current = statuses()
        status = ", ".join(f"{name}: {state}" for name, state in current.items())
        lines = []
        if status != last_status:
            lines.append(f"STATUS={status}")
            last_status = status
        if not ready and current and all(s == "SERVING" for s in current.values()):
            lines.append("READY=1")
            ready = True
            log.info("told systemd READY=1")
        if notifier.watchdog is not None and now >= next_beat and not stopping():
            lines.append("WATCHDOG=1")
            next_beat = now + notifier.watchdog
        if lines:
            notifier.send(*lines)
        await asyncio.sleep(POLL)
