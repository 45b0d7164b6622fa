"""The client side of the contract: a channel to a unix socket that connects as soon as the socket
appears, and the start-up gate (wait until the server's health says SERVING)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flannel_rpc.serve import unix_target

log = logging.getLogger(__name__)

RECONNECT_MS = (100, 1000)
"""Reconnect back-off bounds: the two daemons start together, so the socket may appear a moment later."""


def unix_channel(path: str | os.PathLike[str], options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A channel to ``path`` that retries connecting every 0.1-1 s (gRPC's default starts at 1 s);
    ``options`` are added (e.g. :data:`flannel_rpc.MESSAGE_LIMITS`)."""
    low, high = RECONNECT_MS
    return grpc.aio.insecure_channel(
        unix_target(path),
        options=[
            ("grpc.initial_reconnect_backoff_ms", low),
            ("grpc.min_reconnect_backoff_ms", low),
            ("grpc.max_reconnect_backoff_ms", high),
            *options,
        ],
    )


async def wait_serving(channel: grpc.aio.Channel, what: str, service: str = "") -> None:
    """Return once the server behind ``channel`` says SERVING on grpc.health.v1 ``Watch``.

    This is the gate of the contract: a client started together with its server connects at once and
    waits here, so that it acts only once the server serves, and learns it within a round trip.
    """
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    said = False
    while True:
        call = stub.Watch(request, wait_for_ready=True)
        try:
            async for reply in call:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                if not said:
                    log.info(
                        "waiting for %s to serve (health %s)",
                        what,
                        health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status),
                    )
                    said = True
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return  # a server without health watching: the calls themselves will say whether it serves
            if not said:
                log.info("waiting for %s to serve (%s)", what, exc.code().name)
                said = True
        finally:
            call.cancel()
        await asyncio.sleep(0.1)
