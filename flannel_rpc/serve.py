"""A grpc.aio server on a unix socket (and optionally TCP) with grpc.health.v1 and reflection.

The socket is created in a private way: bound, then chmod/chown'ed before the server
answers, so that access control comes from the file mode (gRPC exposes no peer credentials
on a unix socket).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._add_servicers(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [*self.services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
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
