"""systemd's Type=notify: READY=1 once both children serve, STATUS= on changes, WATCHDOG=1 at half of
WATCHDOG_USEC, STOPPING=1 on stop; spoken to a real unix datagram socket given as NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flannel_testkit.wait import wait_until
from supervisor.notify import Notifier
from tests.supervisor.harness import Flanneld


class NotifySocket:
    """What systemd listens on: every datagram received, with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.time(), data.decode().split("\n")))

    def lines(self) -> list[str]:
        return [line for _, lines in list(self.messages) for line in lines]

    def first(self, line: str) -> float | None:
        return next((t for t, lines in list(self.messages) if line in lines), None)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        yield sock
    finally:
        sock.close()


def test_ready_status_watchdog_and_stopping_reach_the_notify_socket(
    flanneld: Callable[..., Flanneld], notify_socket: NotifySocket
) -> None:
    f = flanneld(
        lease=["--serve-after", "0.8"],
        env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"},
    )
    ready = wait_until(lambda: notify_socket.first("READY=1"), timeout=20, what="READY=1")
    served = [float(e.detail) for e in f.events() if e.what == "serving"]
    assert len(served) == 2 and ready >= max(served)  # not before both children serve
    statuses = [line for line in notify_socket.lines() if line.startswith("STATUS=")]
    assert "STATUS=lease-service: SERVING, backend: SERVING" in statuses
    assert any("STARTING" in line for line in statuses)

    # the watchdog is fed about every 0.2 s (half of 0.4 s)
    beats = len([line for line in notify_socket.lines() if line == "WATCHDOG=1"])
    wait_until(
        lambda: notify_socket.lines().count("WATCHDOG=1") >= beats + 5, timeout=10, what="5 more beats"
    )

    f.signal(signal.SIGTERM)
    assert f.wait() == 0
    assert "STOPPING=1" in notify_socket.lines()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog is None
    notifier.send("READY=1")  # a no-op


def test_watchdog_usec_for_another_pid_is_ignored_and_abstract_sockets_are_understood() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "@flanneld-test", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    try:
        assert notifier.address == "\0flanneld-test"
        assert notifier.watchdog is None if os.getpid() != 1 else notifier.watchdog == 0.5
    finally:
        notifier.close()
    notifier = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "3000000"})
    try:
        assert notifier.watchdog == 1.5
    finally:
        notifier.close()
