"""The two sockets flannelctl talks to, and the one error that becomes exit status 2."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flannel_rpc import BACKEND_SOCKET, LEASE_SOCKET, MESSAGE_LIMITS, unix_target
from proto.flannel.v1 import backend_pb2, backend_pb2_grpc, lease_pb2, lease_pb2_grpc

LEASE_SERVICE = lease_pb2.DESCRIPTOR.services_by_name["LeaseService"].full_name
BACKEND_SERVICE = backend_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name


class CtlError(Exception):
    """A usage or connection problem: printed on stderr, exit status 2."""


def rpc_error_text(exc: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code is not None else 'ERROR'}: {details}"


@dataclass(frozen=True)
class Endpoint:
    """A service on a unix socket: what to call it in messages, and its health-check name."""

    what: str
    socket: Path
    service: str


def lease_endpoint(run_dir: Path) -> Endpoint:
    return Endpoint("lease service", run_dir / LEASE_SOCKET, LEASE_SERVICE)


def backend_endpoint(run_dir: Path) -> Endpoint:
    return Endpoint("backend", run_dir / BACKEND_SOCKET, BACKEND_SERVICE)


class Connection:
    """A channel to one endpoint; ``health()`` is the reachability check that fails with CtlError."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel: grpc.Channel | None = None

    def __enter__(self) -> Self:
        path = self.endpoint.socket
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise CtlError(f"no {self.endpoint.what} socket at {path}: is it running? (--run-dir)") from None
        except PermissionError as exc:
            raise CtlError(f"cannot reach the {self.endpoint.what} socket {path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(mode):
            raise CtlError(f"{path} is not a unix socket (the {self.endpoint.what}'s should be there)")
        self._channel = grpc.insecure_channel(unix_target(path), options=MESSAGE_LIMITS)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def channel(self) -> grpc.Channel:
        assert self._channel is not None, "use Connection as a context manager"
        return self._channel

    def unreachable(self, exc: grpc.RpcError) -> CtlError:
        return CtlError(
            f"cannot reach the {self.endpoint.what} at {self.endpoint.socket}: {rpc_error_text(exc)}"
        )

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status name of ``service`` (the whole server when empty).

        A server that does not answer at all raises CtlError; an unknown service is ``NOT_FOUND``."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "NOT_FOUND"
            raise self.unreachable(exc) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def lease_stub(self) -> lease_pb2_grpc.LeaseServiceStub:
        return lease_pb2_grpc.LeaseServiceStub(self.channel)

    def backend_stub(self) -> backend_pb2_grpc.BackendServiceStub:
        return backend_pb2_grpc.BackendServiceStub(self.channel)


@contextmanager
def answering(endpoint: Endpoint, timeout: float) -> Iterator[Connection]:
    """A connection to ``endpoint`` whose server has answered a health check (else CtlError)."""
    with Connection(endpoint, timeout) as conn:
        conn.health()
        yield conn
