"""A read of the kernel cancelled mid-dump (a stop, a resync superseding it) leaves its socket to the dump
thread: closed there once the dump ends, never under it; a dump cancelled before it started is closed at
once and never runs."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest

from backend_service.kernel.read import _dumped
from flannel_testkit.wait import async_wait_until


async def _until(condition: Callable[[], bool], what: str) -> None:
    await async_wait_until(condition, timeout=10, interval=0.005, what=what)


async def test_a_dump_cancelled_while_it_runs_keeps_its_socket_until_it_ends() -> None:
    sock, peer = socket.socketpair()
    started, release = threading.Event(), threading.Event()
    seen_open: list[bool] = []

    def dump() -> str:
        started.set()
        release.wait(10)
        seen_open.append(sock.fileno() != -1)  # what a read of the socket would find
        return "dumped"

    task = asyncio.create_task(_dumped(sock, dump))
    await _until(started.is_set, "the dump started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sock.fileno() != -1  # the cancelled caller did not close it under the dump
    release.set()
    await _until(lambda: sock.fileno() == -1, "the dump thread closed the socket")
    assert seen_open == [True]
    peer.close()


async def test_a_dump_cancelled_before_it_started_closes_its_socket_and_never_runs() -> None:
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocking() -> None:
        started.set()
        release.wait(10)

    def queued() -> None:
        ran.append("queued")

    running = asyncio.create_task(_dumped(first, blocking))
    await _until(started.is_set, "the first dump started")
    waiting = asyncio.create_task(_dumped(second, queued))  # behind the first: one dump at a time
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert second.fileno() == -1
    release.set()
    await running
    assert ran == [] and first.fileno() == -1
    first_peer.close()
    second_peer.close()
