"""A grpc.aio server on a unix socket (and optionally TCP) with grpc.health.v1 and reflection.

The socket is created in a private way: bound, then chmod/chown'ed before the server
answers, so that access control comes from the file mode (gRPC exposes no peer credentials
on a unix socket).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flannel_rpc.logs import failure

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

MIB = 1024 * 1024
#: The largest message either end of our contract sends or receives (lease service, backend, flannelctl,
#: supervisor probes: all set both limits to this). gRPC's default receive limit is 4 MiB.
MAX_MESSAGE_BYTES = 16 * MIB
#: WatchLeases batches are cut at this many bytes (and at max_batch leases): under gRPC's default receive
#: limit of 4 MiB, so that even a client that set no limit (a third-party backend) takes every message; a
#: lease alone larger than this is refused by name (LEASE_TOO_LARGE).
STREAM_BATCH_BYTES = 3 * MIB
#: Channel and server options that set those limits.
MESSAGE_LIMITS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class _Undecodable:
    """What a request deserializer yields for bytes that are not the request message."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return _Undecodable(exc)

    return deserialize


if TYPE_CHECKING:  # grpc ships no types: to mypy its base class would be Any

    class _ServerInterceptor:
        """What grpc.aio.ServerInterceptor is to its subclasses: a base with nothing typed in it."""

else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class GuardInterceptor(_ServerInterceptor):
    """Every unexpected exception in a servicer becomes INTERNAL with one log line (no traceback per
    request), and request bytes that do not decode become INVALID_ARGUMENT (gRPC alone answers UNKNOWN and
    logs a traceback). Aborts (``context.abort``) pass through unchanged.

    It also keeps the task of every call in flight, so that the server's owner can end them before the
    event loop closes (``settle``): gRPC's ``stop`` returns while a cancelled handler may still be running,
    and a call task still alive when ``asyncio.run`` cancels what is left is logged by gRPC with a
    traceback."""

    def __init__(self) -> None:
        self.calls: set[asyncio.Task[Any]] = set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = handler_call_details.method
        if not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler(
                _guard_unary(method, handler.unary_unary, self.calls),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            _guard_stream(method, handler.unary_stream, self.calls),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    async def settle(self, timeout: float) -> None:
        """End every call still in flight (after the server stopped) and let gRPC's own task around each
        one finish, so that nothing of a call is left for the loop's final cancellation."""
        calls = list(self.calls)
        for task in calls:
            task.cancel()
        if calls:
            await asyncio.wait(calls, timeout=timeout)
        # each call task's wrapper in gRPC wakes one loop turn after the call task ended
        await asyncio.sleep(0)
        await asyncio.sleep(0)


@contextmanager
def _in_flight(calls: set[asyncio.Task[Any]]) -> Iterator[None]:
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - gRPC always runs a handler in a task
        yield
        return
    calls.add(task)
    try:
        yield
    finally:
        calls.discard(task)


async def _check_request(method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        log.warning(
            "%s: undecodable request (%s); answered INVALID_ARGUMENT", method, type(request.error).__name__
        )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {method} message")


async def _internal(method: str, exc: Exception, context: grpc.aio.ServicerContext) -> None:
    log.error("%s failed: %s; answered INTERNAL", method, failure(exc))
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}")


def _guard_unary(
    method: str, behaviour: Callable[..., Any], calls: set[asyncio.Task[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _in_flight(calls):
            await _check_request(method, request, context)
            try:
                result = behaviour(request, context)
                return await result if inspect.isawaitable(result) else result
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - the point of the guard
                await _internal(method, exc, context)

    return guarded


#: How long a stream whose write failed waits for gRPC to cancel it (the peer went away).
PEER_GONE_WAIT = 5.0


def _guard_stream(
    method: str, behaviour: Callable[..., Any], calls: set[asyncio.Task[Any]]
) -> Callable[..., Awaitable[None]]:
    # The guard writes each message itself (a coroutine handler, not an async generator): a write to a
    # peer that has just gone away fails inside gRPC before gRPC has noticed that the peer cancelled, and
    # gRPC logs such a failure with a traceback when the generator's message is written by gRPC itself.
    # Here the failure is caught and the handler waits for the cancellation that follows.
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> None:
        with _in_flight(calls):
            await _check_request(method, request, context)
            try:
                result = behaviour(request, context)
                if inspect.isawaitable(result):  # a handler that writes for itself
                    await result
                    return
                peer_gone = await _write_all(context, result)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - the point of the guard
                await _internal(method, exc, context)
                return
            if peer_gone:
                # the stream is closed (its resources released); gRPC cancels this handler once it has
                # seen the peer's cancellation, and answering anything before that would fail the same way
                await asyncio.sleep(PEER_GONE_WAIT)

    return guarded


async def _write_all(context: grpc.aio.ServicerContext, messages: Any) -> bool:
    """Write every message of ``messages`` (an async or a plain iterable; an async one is closed however
    the writing ends); True when the call ended under a write (the peer went away)."""
    if hasattr(messages, "__aiter__"):
        async with aclosing(messages):
            async for item in messages:
                if not await _written(context, item):
                    return True
        return False
    for item in messages:
        if not await _written(context, item):
            return True
    return False


async def _written(context: grpc.aio.ServicerContext, item: Any) -> bool:
    """Write one message; False when the call ended under the write. A message that fails to serialize
    (a bug of ours, raised by its serializer before gRPC's core is reached) is raised, and answered
    INTERNAL by the guard."""
    try:
        await context.write(item)
    except (grpc.aio.AbortError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if not _from_grpc_core(exc):
            raise
        log.debug("write failed (%s); waiting for the call's cancellation", type(exc).__name__)
        return False
    return True


def _from_grpc_core(exc: Exception) -> bool:
    # gRPC's core error types are not public; their module is
    return type(exc).__module__.startswith("grpc.")


def unix_target(path: str | os.PathLike[str]) -> str:
    """The gRPC target for a unix socket path."""
    return f"unix:{os.fspath(path)}"


class UnixServer:
    """A gRPC server bound to a unix socket, with health and reflection registered.

    ``services`` are the full names of the services that ``add_servicers`` registers, so that
    reflection lists them and health can be set per service.
    """

    def __init__(
        self,
        socket_path: Path,
        services: Iterable[str],
        add_servicers: Callable[[grpc.aio.Server], None],
        *,
        socket_mode: int = 0o660,
        socket_gid: int | None = None,
        tcp_listen: str | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.services = list(services)
        self._add_servicers = add_servicers
        self._socket_mode = socket_mode
        self._socket_gid = socket_gid
        self._tcp_listen = tcp_listen
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.tcp_port: int | None = None
        self._guard = GuardInterceptor()

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), *MESSAGE_LIMITS], interceptors=[self._guard]
        )
        self._add_servicers(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [
            *self.services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, server)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        server.add_insecure_port(unix_target(self.socket_path))
        if self._tcp_listen:
            self.tcp_port = server.add_insecure_port(self._tcp_listen)
        # gRPC binds at add_insecure_port: the mode is set before the server answers anything
        os.chmod(self.socket_path, self._socket_mode)
        if self._socket_gid is not None:
            os.chown(self.socket_path, -1, self._socket_gid)
        await server.start()
        self.server = server
        await self.set_serving(False)
        log.info("serving %s on %s", ", ".join(self.services), self.socket_path)

    async def set_serving(self, serving: bool) -> None:
        """Overall health and every listed service's health at once."""
        status = SERVING if serving else NOT_SERVING
        await self.health.set("", status)
        for name in self.services:
            await self.health.set(name, status)

    async def stop(self, grace: float = 1.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
            await self._guard.settle(timeout=grace + 1.0)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
