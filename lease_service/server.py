"""The flannel.v1.LeaseService servicer: thin, it parses requests and delegates."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from flannel_rpc.logs import LogOnce, label, shorten
from flannel_rpc.untrusted import BACKEND_DATA, TOO_LARGE, Rejected, decode_json
from lease_service.extiface import ExternalInterface
from lease_service.keeper import LeaseKeeper
from lease_service.lease import LeaseAttrs, canonical_json
from lease_service.netconfig import NetworkConfig
from lease_service.stream import LeaseHub
from lease_service.subnet.base import (
    AccessDenied,
    AcquireError,
    StateUnavailable,
    StoreUnavailable,
    SubnetManager,
)
from lease_service.wire import config_to_proto, external_interface_to_proto, lease_to_proto
from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

log = logging.getLogger(__name__)
SERVICE = lease_pb2.DESCRIPTOR.services_by_name["LeaseService"].full_name

VERSION = "0.1.0"
MTU_MIN, MTU_MAX = 576, 65535
MAX_BATCH_LIMIT = 10_000
MAX_REJECTION_LINES = 20  #: new rejections logged one per line per report; the rest are counted in one line


class LeaseServicer(lease_pb2_grpc.LeaseServiceServicer):
    """Serves one node's lease and the cluster's lease stream."""

    def __init__(self, store_kind: str) -> None:
        self.store_kind = store_kind
        self.waiting_for = "the network config"  #: why the service is not ready, for UNAVAILABLE errors
        self._ready: _Ready | None = None
        self._rejections_logged = LogOnce()

    def add_to(self, server: grpc.aio.Server) -> None:
        """Serve this servicer on ``server``: the generated method handlers, except that WatchLeases sends
        the hub's messages as they are (they are held in wire form, see :mod:`lease_service.stream`)."""
        # the generated function is untyped (grpc generates no type stubs): named here with its type
        add: Callable[[LeaseServicer, _Handlers], None] = lease_pb2_grpc.add_LeaseServiceServicer_to_server
        handlers = _Handlers()
        add(self, handlers)
        handlers.methods["WatchLeases"] = grpc.unary_stream_rpc_method_handler(
            self.WatchLeases,
            request_deserializer=lease_pb2.WatchLeasesRequest.FromString,
            response_serializer=bytes,  # already serialized
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers.methods),))
        server.add_registered_method_handlers(SERVICE, handlers.methods)

    def attach(
        self,
        config: NetworkConfig,
        manager: SubnetManager,
        hub: LeaseHub,
        keeper: LeaseKeeper,
        external: ExternalInterface,
    ) -> None:
        """Start answering: until then every call is UNAVAILABLE, naming what is awaited."""
        self._ready = _Ready(config, manager, hub, keeper, external)

    async def _state(self, context: grpc.aio.ServicerContext) -> _Ready:
        if self._ready is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"lease service not ready: waiting for {self.waiting_for}"
            )
        assert self._ready is not None
        return self._ready

    async def Describe(
        self, request: lease_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> lease_pb2.DescribeResponse:
        capabilities = [f"subnet-manager:{self.store_kind}", "batched-events", "resume-cursor"]
        if self._ready is not None and self._ready.config.enable_ipv6:
            capabilities.append("ipv6")
        return lease_pb2.DescribeResponse(
            name="flannel-py lease service",
            version=VERSION,
            api_versions=["flannel.v1"],
            capabilities=capabilities,
        )

    async def GetNetworkConfig(
        self, request: lease_pb2.GetNetworkConfigRequest, context: grpc.aio.ServicerContext
    ) -> lease_pb2.GetNetworkConfigResponse:
        state = await self._state(context)
        return lease_pb2.GetNetworkConfigResponse(
            config=config_to_proto(state.config),
            external_interface=external_interface_to_proto(state.external),
        )

    async def AcquireLease(
        self, request: lease_pb2.AcquireLeaseRequest, context: grpc.aio.ServicerContext
    ) -> lease_pb2.AcquireLeaseResponse:
        state = await self._state(context)
        if request.backend_type != state.config.backend_type:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"backend_type {shorten(request.backend_type)} does not match the network config's Backend.Type "
                f"{state.config.backend_type!r}",
            )
        data: dict[str, str] = {}
        for field in ("backend_data", "backend_v6_data"):
            text = getattr(request, field)
            try:
                data[field] = canonical_json(decode_json(text, BACKEND_DATA, field)) if text else ""
            except Rejected as exc:
                code = (
                    grpc.StatusCode.RESOURCE_EXHAUSTED
                    if exc.reason == TOO_LARGE
                    else grpc.StatusCode.INVALID_ARGUMENT
                )
                await context.abort(code, f"{exc.message} ({exc.reason})")
        if not MTU_MIN <= request.mtu <= MTU_MAX:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"mtu {request.mtu} is outside {MTU_MIN}..{MTU_MAX}"
            )
        attrs = LeaseAttrs(
            public_ip=state.external.public_ip,
            public_ipv6=state.external.public_ipv6,
            backend_type=request.backend_type,
            backend_data=data["backend_data"],
            backend_v6_data=data["backend_v6_data"],
        )
        try:
            lease = await state.keeper.acquire(attrs, request.mtu)
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"store unavailable: {exc}")
        except AccessDenied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except AcquireError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return lease_pb2.AcquireLeaseResponse(lease=lease_to_proto(lease))

    async def WatchLeases(
        self, request: lease_pb2.WatchLeasesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """The hub's stream: each message a ``WatchLeasesResponse`` already in wire form."""
        state = await self._state(context)
        if request.max_batch > MAX_BATCH_LIMIT:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"max_batch {request.max_batch} is above the limit {MAX_BATCH_LIMIT}",
            )
        old_state: dict[str, bytes] | None = None
        if request.cursor:
            await state.hub.wait_ready()  # a resume needs the listing: how far back the memory goes
        revision = state.hub.beyond_memory(request.cursor)
        if revision is not None:  # resumed by diffing the store's state then against now, when it has it
            try:
                old_state = await state.manager.state_at(state.config, revision, state.hub.comparable)
            except StateUnavailable as exc:
                log.info("cannot resume from revision %d (%s); sending a snapshot", revision, exc)
        async for msg in state.hub.watch(request.cursor, request.max_batch, old_state):
            yield msg

    async def WatchLease(
        self, request: lease_pb2.WatchLeaseRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[lease_pb2.WatchLeaseResponse]:
        state = await self._state(context)
        async for event in state.keeper.watch():
            yield event

    async def ReportBackendStatus(
        self, request: lease_pb2.ReportBackendStatusRequest, context: grpc.aio.ServicerContext
    ) -> lease_pb2.ReportBackendStatusResponse:
        # Logged once per change of each rejected lease (not on every report: a report follows every
        # delta and every resync, and a restarted backend reports everything again), values shortened;
        # memory is the LogOnce's bound (the least recently rejected keys are forgotten first).
        new = 0
        for rejected in request.rejected:
            token = (rejected.reason, hash(rejected.lease.SerializeToString(deterministic=True)))
            if self._rejections_logged.first(rejected.lease.key, token):
                new += 1
                if new <= MAX_REJECTION_LINES:
                    log.info(
                        "backend rejected lease %s: %s (%s)",
                        label(rejected.lease.key),
                        rejected.reason,
                        shorten(rejected.message, 300, quote=False),
                    )
        if new > MAX_REJECTION_LINES:
            log.info(
                "backend rejected %d more leases (see the backend's GetStatus)", new - MAX_REJECTION_LINES
            )
        return lease_pb2.ReportBackendStatusResponse()


class _Handlers:
    """Collects the generated method handlers (the generated function's view of a server)."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers come again by name below

    def add_registered_method_handlers(self, service: str, methods: dict[str, grpc.RpcMethodHandler]) -> None:
        self.methods.update(methods)


@dataclass(frozen=True)
class _Ready:
    config: NetworkConfig
    manager: SubnetManager
    hub: LeaseHub
    keeper: LeaseKeeper
    external: ExternalInterface
