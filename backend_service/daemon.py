"""The backend daemon: wires the session, the follower, the reconciler and the status server together
(loaded by :mod:`backend_service.__main__` once the command line is parsed)."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal

from pyroute2.iproute.linux import AsyncIPRoute

from backend_service import cli
from backend_service.controller import EXIT_USAGE, Controller
from backend_service.follow import LeaseView
from backend_service.kernel.apply import NetlinkKernel
from backend_service.masq import RuleOptions, TrafficRules
from backend_service.server import BackendServicer
from backend_service.session import Session, local_dataplane
from backend_service.status import Health, Status
from flannel_rpc import MESSAGE_LIMITS, UnixServer
from flannel_rpc.channel import unix_channel, wait_serving
from flannel_rpc.metrics import serve_metrics
from proto.flannel.v1 import backend_pb2, backend_pb2_grpc, lease_pb2_grpc

log = logging.getLogger("backend_service")
SERVICE = backend_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name


async def serve(settings: cli.Settings) -> int:
    if not serve_metrics(settings.metrics_listen, log):
        return EXIT_USAGE
    status = Status()
    server = UnixServer(
        settings.backend_socket,
        [SERVICE],
        lambda s: backend_pb2_grpc.add_BackendServiceServicer_to_server(BackendServicer(status), s),
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with (
            AsyncIPRoute() as ipr,
            unix_channel(settings.lease_socket, options=MESSAGE_LIMITS) as channel,
        ):
            view = LeaseView()
            session = Session(
                settings,
                lease_pb2_grpc.LeaseServiceStub(channel),
                status,
                view,
                functools.partial(local_dataplane, ipr, settings),
                gate=functools.partial(wait_serving, channel, "the lease service"),
                traffic=TrafficRules(
                    RuleOptions(
                        masquerade=settings.ip_masq,
                        forward=settings.iptables_forward_rules,
                        random_fully_disable=settings.ip_masq_fully_random_disable,
                    ),
                    nftables=settings.nftables,
                    blackhole_ipr=ipr if settings.ip_blackhole_route else None,
                ),
            )
            controller = Controller(
                session,
                NetlinkKernel(ipr),
                view,
                status,
                Health(status, server.set_serving),
                resync_period=settings.resync_period,
            )
            return await controller.run(stop)
    finally:
        await server.stop(grace=0.5)
