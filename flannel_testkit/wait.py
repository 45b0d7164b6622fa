"""Wait for a condition with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

T = TypeVar("T")


# The predicate is called without arguments (it may bind loop variables as defaults) and may answer False
# or None while it waits: what is returned is its first other answer.


def wait_until(
    predicate: Callable[..., T | Literal[False] | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}; last value {last!r}"
            )
        time.sleep(interval)
        last = predicate()
    return last


@overload
async def async_wait_until(
    predicate: Callable[..., Awaitable[T | Literal[False] | None]],
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def async_wait_until(
    predicate: Callable[..., T | Literal[False] | None],
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def async_wait_until(
    predicate: Callable[..., Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> Any:
    """Async twin of :func:`wait_until`: ``predicate`` is a coroutine function or a plain one (a condition on
    state the event loop changes), polled while the loop runs other tasks."""

    async def value() -> Any:
        got = predicate()
        return await got if inspect.isawaitable(got) else got

    deadline = time.monotonic() + timeout
    last = await value()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}; last value {last!r}"
            )
        await asyncio.sleep(interval)
        last = await value()
    return last
