"""A grpc.aio server on a unix socket (and optionally TCP) with grpc.health.v1 and reflection.

The socket is created in a private way: bound, then chmod/chown'ed before the server
answers, so that access control comes from the file mode (gRPC exposes no peer credentials
on a unix socket).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
    logs a traceback). Aborts (``context.abort``) pass through unchanged."""

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
                _guard_unary(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            _guard_stream(method, handler.unary_stream),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


async def _check_request(method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        log.warning(
            "%s: undecodable request (%s); answered INVALID_ARGUMENT", method, type(request.error).__name__
        )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {method} message")


async def _internal(method: str, exc: Exception, context: grpc.aio.ServicerContext) -> None:
    where = exc.__traceback__
    while where is not None and where.tb_next is not None:
        where = where.tb_next
    place = f" at {where.tb_frame.f_code.co_filename}:{where.tb_lineno}" if where is not None else ""
    log.error("%s failed: %s: %s%s; answered INTERNAL", method, type(exc).__name__, str(exc)[:200], place)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}")


def _guard_unary(method: str, behaviour: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _check_request(method, request, context)
        try:
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the point of the guard
            await _internal(method, exc, context)

    return guarded


def _guard_stream(method: str, behaviour: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await _check_request(method, request, context)
        try:
            result = behaviour(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            elif inspect.isawaitable(result):
                await result
            else:
                for item in result:
                    yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the point of the guard
            await _internal(method, exc, context)

    return guarded


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

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), *MESSAGE_LIMITS], interceptors=[GuardInterceptor()]
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
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
