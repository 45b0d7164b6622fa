"""flannel-backend: wires the lease stream to the dataplane and serves BackendService."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import signal
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import grpc
from pyroute2 import AsyncIPRoute

import flannel_flags
from backend_service import cli, metrics
from backend_service.backend import Backend, BackendSetup
from backend_service.config import ConfigError, NetworkConfig, parse_network_config
from backend_service.dataplane import Dataplane, make_backend
from backend_service.diff import Op
from backend_service.follow import LeaseView
from backend_service.incremental import PeerIndex
from backend_service.kernel import KernelError, TemplateApplier, read_public_interface
from backend_service.masq import IptablesMasq, MasqError, MasqNetwork, Masquerade, NftablesMasq
from backend_service.node import LocalNode, PublicInterface
from backend_service.server import BackendServicer, Status
from backend_service.validate import Rejection
from flannel_rpc import UnixServer, configure_logging, unix_target
from proto.flannel.v1 import backend_pb2, backend_pb2_grpc, lease_pb2, lease_pb2_grpc

log = logging.getLogger("backend_service")
SERVICE = backend_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name
WatchLease = lease_pb2.WatchLeaseResponse


class Fatal(Exception):
    """A condition the backend cannot run under (bad config, no public interface); exit non-zero."""


class BackendDaemon:
    """The backend's service loop: one session per connection to the lease service."""

    def __init__(self, settings: cli.Settings, ipr: AsyncIPRoute, server: UnixServer, status: Status) -> None:
        self.settings = settings
        self.ipr = ipr
        self.server = server
        self.status = status
        self.view = LeaseView()
        self.dirty = asyncio.Event()
        self.node: LocalNode | None = None
        self.own_key = ""
        self.masq: Masquerade | None = None
        self._rejected_seen: set[tuple[str, str]] = set()
        self._full_needed = True
        status.leases = lambda: self.view.leases
        channel = grpc.aio.insecure_channel(unix_target(settings.lease_socket))
        self.channel = channel
        self.stub = lease_pb2_grpc.LeaseServiceStub(channel)

    async def _retry(self, what: str, call):  # type: ignore[no-untyped-def]
        """Call until it answers; log each new failure once."""
        delay, last = 0.1, ""
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
                if reason != last:
                    log.warning("%s: lease service answered %s; retrying", what, reason)
                    last = reason
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 3.0)

    async def prepare(self) -> tuple[NetworkConfig, PublicInterface, Backend, BackendSetup]:
        reply = await self._retry("GetNetworkConfig", lambda: self.stub.GetNetworkConfig(
            lease_pb2.GetNetworkConfigRequest(), timeout=5, wait_for_ready=True))
        try:
            config = parse_network_config(reply.config)
        except ConfigError as exc:
            raise Fatal(f"unusable network config: {exc}") from exc
        try:
            public = await read_public_interface(self.ipr, self.settings.iface,
                                                 ipv4=config.enable_ipv4, ipv6=config.enable_ipv6)
        except KernelError as exc:
            raise Fatal(str(exc)) from exc
        if self.settings.public_ip or self.settings.public_ipv6:
            public = dataclasses.replace(public, ipv4=self.settings.public_ip or public.ipv4,
                                         ipv6=self.settings.public_ipv6 or public.ipv6)
        backend = make_backend(self.ipr, config, public)
        setup = await backend.setup()
        log.info("backend %s ready on %s (public %s), device %s, MTU %d", setup.backend_type, public.ifname,
                 public.ipv4 or public.ipv6, setup.device or "-", setup.mtu)
        self.status.backend_type, self.status.device, self.status.mtu = setup.backend_type, setup.device, setup.mtu
        return config, public, backend, setup

    async def run(self) -> None:
        config, public, backend, setup = await self.prepare()
        dataplane = Dataplane(self.ipr, config, backend, applier=TemplateApplier(self.ipr))
        reconciler = asyncio.ensure_future(self._reconcile_loop(dataplane, config))
        try:
            delay = 0.1
            while True:
                try:
                    await self._session(config, public, backend, setup)
                except grpc.aio.AioRpcError as exc:
                    metrics.LEASE_SERVICE_RECONNECTS.inc()
                    log.warning("lost the lease service (%s: %s); reconnecting, resuming from cursor",
                                exc.code().name, exc.details())
                self.view.interrupted()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 3.0)
        finally:
            reconciler.cancel()

    async def _session(self, config: NetworkConfig, public: PublicInterface, backend: Backend, setup: BackendSetup) -> None:
        request = lease_pb2.AcquireLeaseRequest(backend_type=setup.backend_type, backend_data=setup.backend_data,
                                                backend_v6_data=setup.backend_v6_data, mtu=setup.mtu)
        reply = await self._retry("AcquireLease", lambda: self.stub.AcquireLease(request, timeout=30, wait_for_ready=True))
        await self._adopt(reply.lease, config, public, backend)
        streams = {asyncio.ensure_future(self._follow_leases()),
                   asyncio.ensure_future(self._follow_own_lease(config, public, backend))}
        try:
            done, _ = await asyncio.wait(streams, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in streams:
                task.cancel()
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   "the lease service closed the stream")

    async def _adopt(self, lease: lease_pb2.Lease, config: NetworkConfig, public: PublicInterface, backend: Backend) -> None:
        """Make ``lease`` this node's: device addresses, masquerade rules, status."""
        node = LocalNode(
            subnet=IPv4Network(lease.subnet) if lease.subnet else None,
            ipv6_subnet=IPv6Network(lease.ipv6_subnet) if lease.ipv6_subnet else None,
            public_ip=IPv4Address(lease.public_ip) if lease.public_ip else public.ipv4,
            public_ipv6=IPv6Address(lease.public_ipv6) if lease.public_ipv6 else public.ipv6,
        )
        if public.ipv4 and node.public_ip != public.ipv4:
            log.error("the lease service publishes %s but the VXLAN local address is %s: give both the same "
                      "--iface/--public-ip", node.public_ip, public.ipv4)
        if node != self.node:
            log.info("own lease %s (subnet %s%s)", lease.key, lease.subnet or "-",
                     f", {lease.ipv6_subnet}" if lease.ipv6_subnet else "")
        await backend.configure(node)
        self.node, self.own_key = node, lease.key
        self.status.own_lease = lease
        if self.settings.ip_masq:
            networks = [MasqNetwork(net, sub) for net, sub in ((config.network, node.subnet),
                                                                (config.ipv6_network, node.ipv6_subnet))
                        if net is not None and sub is not None]
            self.masq = NftablesMasq(networks) if self.settings.nftables else IptablesMasq(networks)
            self.status.ip_masq = True
            await self._ensure_masq()
        self._full_needed = True  # a new own lease changes what every peer needs
        self.dirty.set()

    async def _follow_leases(self) -> None:
        call = self.stub.WatchLeases(lease_pb2.WatchLeasesRequest(cursor=self.view.cursor))
        async for msg in call:
            if self.view.apply(msg):
                self.dirty.set()

    async def _follow_own_lease(self, config: NetworkConfig, public: PublicInterface, backend: Backend) -> None:
        async for event in self.stub.WatchLease(lease_pb2.WatchLeaseRequest()):
            if event.kind == WatchLease.LOST:
                log.warning("own lease %s lost; the lease service is re-acquiring it", event.lease.key)
            elif event.kind == WatchLease.REACQUIRED or event.lease.key != self.own_key:
                await self._adopt(event.lease, config, public, backend)

    async def _ensure_masq(self) -> None:
        if self.masq is None:
            return
        try:
            if await self.masq.ensure():
                log.info("masquerade rules (re)applied")
        except MasqError as exc:
            log.error("cannot apply masquerade rules: %s", exc)

    async def _reconcile_loop(self, dataplane: Dataplane, config: NetworkConfig) -> None:
        """Apply each batch of lease changes: by delta when the peer index can, else in full."""
        index = PeerIndex(config, dataplane.backend)
        while True:
            full = False
            try:
                await asyncio.wait_for(self.dirty.wait(), self.settings.resync_period)
            except TimeoutError:
                await self._ensure_masq()
                full = True  # the periodic full reconcile repairs whatever drifted
            self.dirty.clear()
            if self.node is None:
                continue
            changes = self.view.take_changes()
            if self._full_needed:
                full, self._full_needed = True, False
            if not full and changes is not None and self.view.synced:
                changes.pop(self.own_key, None)
                if not changes:
                    continue
                ops = index.plan(changes)
                if ops is not None:
                    await self._apply_delta(dataplane, index, changes, ops)
                    continue
            await self._reconcile_once(dataplane, index)

    async def _apply_delta(
        self, dataplane: Dataplane, index: PeerIndex, changes: dict[str, lease_pb2.Lease | None], ops: list[Op]
    ) -> None:
        with metrics.RECONCILE_SECONDS.time():
            result = await dataplane.applier.apply(ops)
        metrics.KERNEL_OPS.inc(result.applied)
        metrics.KERNEL_OP_FAILURES.inc(len(result.failures))
        if not result.ok:  # the kernel disagreed: trust nothing, reconcile in full
            log.warning("%d of %d changes failed; reconciling in full", len(result.failures), len(ops))
            index.invalidate()
            self._full_needed = True
            self.dirty.set()
        for key, lease in changes.items():
            mode = index.modes.get(key)
            if lease is not None and mode is not None:
                self.status.peers[key] = mode
            else:
                self.status.peers.pop(key, None)
        self._record(index.rejected.values(), "ok" if result.ok else "; ".join(map(str, result.failures))[:2000])
        await self._report()

    async def _reconcile_once(self, dataplane: Dataplane, index: PeerIndex) -> None:
        cursor, synced = self.view.cursor, self.view.synced
        peers = [lease for key, lease in self.view.leases.items() if key != self.own_key]
        assert self.node is not None
        try:
            with metrics.RECONCILE_SECONDS.time():
                report = await dataplane.reconcile(peers, self.node, synced=synced)
            metrics.KERNEL_OPS.inc(report.result.applied)
            metrics.KERNEL_OP_FAILURES.inc(len(report.result.failures))
            outcome = "ok" if report.ok else "; ".join(str(f) for f in report.result.failures)[:2000]
        except Exception as exc:  # the kernel said no in a way we did not foresee: report, retry later
            log.exception("reconcile failed")
            index.invalidate()
            self.status.last_outcome = f"error: {exc}"
            self.status.last_reconcile = datetime.now(UTC)
            return
        if synced:
            index.rebuild(report)
        else:
            index.invalidate()
        self.status.peers = {plan.peer.key: plan.mode for plan in report.peers}
        self._record(report.rejected, outcome, cursor, synced)
        if synced and report.ok:
            await self.server.set_serving(True)
        await self._report()

    def _record(self, rejected: Iterable[Rejection], outcome: str, cursor: str | None = None,
                synced: bool | None = None) -> None:
        """Status, metrics and the once-per-rejection log line after a reconcile of either kind."""
        self.status.rejected = {r.lease.key: r.to_proto() for r in rejected}
        metrics.PEERS.set(len(self.status.peers))
        metrics.REJECTED_LEASES.set(len(self.status.rejected))
        for key, rejection in self.status.rejected.items():
            seen = (key, rejection.reason)
            if seen not in self._rejected_seen:
                self._rejected_seen.add(seen)
                log.warning("rejected lease %s: %s", rejection.reason, rejection.message)
        self.status.last_reconcile = datetime.now(UTC)
        self.status.last_outcome = outcome
        self.status.applied_cursor = self.view.cursor if cursor is None else cursor
        self.status.synced = self.view.synced if synced is None else synced

    async def _report(self) -> None:
        try:
            await self.stub.ReportBackendStatus(lease_pb2.ReportBackendStatusRequest(
                applied_cursor=self.status.applied_cursor, rejected=list(self.status.rejected.values())), timeout=5)
        except grpc.aio.AioRpcError:
            pass  # the lease service is away; the next reconcile reports again


async def serve(settings: cli.Settings) -> int:
    if settings.metrics_listen is not None:
        host, port = settings.metrics_listen
        try:
            port = metrics.serve(host, port)
        except OSError as exc:
            log.error("cannot serve metrics on --metrics-listen %s:%d: %s", host, port, exc)
            return 2
        log.info("serving Prometheus metrics on http://%s:%d/metrics", host, port)
    status = Status()
    server = UnixServer(settings.backend_socket, [SERVICE],
                        lambda s: backend_pb2_grpc.add_BackendServiceServicer_to_server(BackendServicer(status), s))
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with AsyncIPRoute() as ipr:
            daemon = BackendDaemon(settings, ipr, server, status)
            work = asyncio.ensure_future(daemon.run())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                failure = work.exception()
                if isinstance(failure, (Fatal, KernelError, ConfigError)):
                    log.error("cannot run: %s", failure)
                    return 2
                log.error("backend stopped unexpectedly: %r", failure)
                return 1
            work.cancel()
            await daemon.channel.close()
            log.info("stopped; the dataplane stays as it is")
            return 0
    finally:
        await server.stop(grace=0.5)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = cli.parse(sys.argv[1:] if argv is None else argv)
    except flannel_flags.Done as done:
        print(done.text)
        return 0
    except cli.UsageError as exc:
        print(f"flannel-backend: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.verbosity)
    for notice in settings.notices:
        log.warning("%s", notice)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
