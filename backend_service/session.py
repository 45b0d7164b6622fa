"""The session with the lease service: connect, set the backend up, acquire and follow the node's lease.

:meth:`Session.prepare` runs once: the network config, the public interface, the backend's
devices. :meth:`Session.run` then holds one session per connection: ``AcquireLease`` (which
publishes the backend data), the node's own lease adopted (device addresses, masquerade rules),
and two streams followed until either breaks: ``WatchLeases`` into the lease view
(:func:`backend_service.follow.follow`) and ``WatchLease`` for this node's lease. A broken
connection is retried with back-off and resumed from the view's cursor.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import NoReturn, TypeVar

import grpc
from pyroute2.iproute.linux import AsyncIPRoute

from flannel_rpc.logs import failure, shorten
from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

from . import cli, metrics
from .backend import Backend, BackendSetup
from .config import HOST_GW, VXLAN, WIREGUARD, ConfigError, NetworkConfig, parse_network_config
from .controller import EXIT_PERMANENT, EXIT_USAGE, Fatal
from .devwatch import DeviceWatcher
from .follow import LeaseView, follow
from .hostgw.backend import HostGwBackend
from .kernel.model import KernelError
from .kernel.read import check_public_interface, public_interface_from
from .leases import LeaseError, held_message, parse_wireguard_data
from .masq import MasqNetwork, ToolsMissing, TrafficRules
from .node import LocalNode, PublicInterface
from .nodecheck import warn_if_br_netfilter_missing
from .status import Status
from .vxlan.backend import VxlanBackend
from .wireguard.backend import WireGuardBackend
from .wireguard.keys import key_file

log = logging.getLogger(__name__)
WatchLease = lease_pb2.WatchLeaseResponse
#: Status codes that say "your request is wrong": never retried (UNAVAILABLE and the rest may heal).
PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
#: Rejections sent per ReportBackendStatus (all of them are in GetStatus and logged once each).
MAX_REPORTED_REJECTIONS = 1000
T = TypeVar("T")


def make_backend(
    ipr: AsyncIPRoute,
    config: NetworkConfig,
    public: PublicInterface,
    run_dir: Path = Path("/run/flannel"),
    *,
    own_netns: bool = False,
) -> Backend:
    """The backend ``config.backend_type`` names (``own_netns``: see :class:`VxlanBackend`)."""
    if config.backend_type == VXLAN:
        return VxlanBackend(ipr, config, public, own_netns=own_netns)
    if config.backend_type == HOST_GW:
        return HostGwBackend(public)
    if config.backend_type == WIREGUARD:
        return WireGuardBackend(ipr, config, public, key_file(run_dir))
    raise ConfigError("Backend.Type", config.backend_type, f"one of {VXLAN!r}, {HOST_GW!r}, {WIREGUARD!r}")


async def local_dataplane(
    ipr: AsyncIPRoute, settings: cli.Settings, config: NetworkConfig, external: lease_pb2.ExternalInterface
) -> tuple[PublicInterface, Backend]:
    """The backend on the external interface the lease service chose (``GetNetworkConfig``): this
    process never chooses one, it only checks that it sees the same interface."""
    try:
        public = public_interface_from(external)
        await check_public_interface(ipr, public)
    except KernelError as exc:
        raise Fatal(str(exc), EXIT_PERMANENT) from exc
    warn_if_br_netfilter_missing(ipv4=config.enable_ipv4, ipv6=config.enable_ipv6)
    return public, make_backend(ipr, config, public, settings.run_dir, own_netns=True)


@dataclass(frozen=True)
class Prepared:
    """What :meth:`Session.prepare` set up: the config, the underlay and the backend with its devices."""

    config: NetworkConfig
    public: PublicInterface
    backend: Backend
    setup: BackendSetup


DataplaneFactory = Callable[
    [NetworkConfig, lease_pb2.ExternalInterface], Awaitable[tuple[PublicInterface, Backend]]
]


class Session:
    """This node's side of the lease service (see the module docstring)."""

    def __init__(
        self,
        settings: cli.Settings,
        stub: lease_pb2_grpc.LeaseServiceStub,
        status: Status,
        view: LeaseView,
        dataplane: DataplaneFactory,
        gate: Callable[[], Awaitable[None]] | None = None,
        traffic: TrafficRules | None = None,
    ) -> None:
        self.settings = settings
        self.stub = stub
        self._gate = gate
        """Returns once the lease service serves (started together, the backend must not act before)."""
        self.status = status
        self.view = view
        self._dataplane = dataplane
        self.node: LocalNode | None = None
        self.own_key = ""
        self.traffic = traffic
        """flannel's FORWARD/masquerade rules and blackhole routes; None: none at all (tests with fakes)."""
        self.device_lock = asyncio.Lock()
        """Device repairs never run alongside ``configure()`` of a newly adopted own lease."""

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Call until it answers; log each new failure once. A permanent refusal (our request is wrong:
        retrying cannot help) is not retried: it stops the backend with the cause."""
        delay, last = 0.1, ""
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                if exc.code() in PERMANENT:
                    raise Fatal(
                        f"{what}: the lease service refused the request for good ({exc.code().name}: "
                        f"{shorten(exc.details() or '', 300, quote=False)})",
                        EXIT_PERMANENT,
                    ) from None
                reason = f"{exc.code().name}: {exc.details()}"
                if reason != last:
                    log.warning("%s: lease service answered %s; retrying", what, reason)
                    last = reason
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 3.0)

    async def prepare(self) -> Prepared:
        """The network config, the public interface, the backend's devices; :class:`Fatal` if unusable."""
        if self._gate is not None:
            await self._gate()
        reply = await self._retry(
            "GetNetworkConfig",
            lambda: self.stub.GetNetworkConfig(
                lease_pb2.GetNetworkConfigRequest(), timeout=5, wait_for_ready=True
            ),
        )
        try:
            config = parse_network_config(reply.config)
        except ConfigError as exc:
            raise Fatal(f"unusable network config: {exc}", EXIT_USAGE) from exc
        if self.traffic is not None:
            self.traffic.nftables = self.settings.nftables or config.enable_nftables
            try:
                self.traffic.check_tools(
                    [v for v, on in ((4, config.enable_ipv4), (6, config.enable_ipv6)) if on]
                )
            except ToolsMissing as exc:
                raise Fatal(str(exc), EXIT_PERMANENT) from exc
        public, backend = await self._dataplane(config, reply.external_interface)
        try:
            setup = await backend.setup()
        except KernelError as exc:
            raise Fatal(str(exc), EXIT_PERMANENT) from exc
        log.info(
            "backend %s ready on %s (public %s), device %s, MTU %d",
            setup.backend_type,
            public.ifname,
            public.ipv4 or public.ipv6,
            setup.device or "-",
            setup.mtu,
        )
        self.status.backend_type, self.status.device, self.status.mtu = (
            setup.backend_type,
            setup.device,
            setup.mtu,
        )
        if isinstance(backend, WireGuardBackend):
            self.status.wireguard = lambda: backend.status(self._programmed_keys())
        return Prepared(config, public, backend, setup)

    def _programmed_keys(self) -> dict[str, str]:
        """Public key → lease key of every WireGuard peer programmed (for GetStatus)."""
        leases = self.status.leases()
        out: dict[str, str] = {}
        for key in self.status.peers:
            held = leases.get(key)
            lease = held_message(held) if held is not None else None
            for data in (lease.backend_data, lease.backend_v6_data) if lease is not None else ():
                try:
                    out[parse_wireguard_data("backend_data", data).public_key] = key
                except LeaseError:
                    continue
        return out

    async def run(
        self, prepared: Prepared, adopted: Callable[[LocalNode], None], changed: Callable[[], None]
    ) -> NoReturn:
        """Sessions, one per connection, forever; ``adopted(node)`` after each own lease adopted,
        ``changed()`` after each change of the lease view."""
        delay = 0.1
        while True:
            try:
                await self._session(prepared, adopted, changed)
            except* grpc.aio.AioRpcError as group:
                exc = group.exceptions[0]
                assert isinstance(exc, grpc.aio.AioRpcError)
                if (
                    exc.code() in PERMANENT
                ):  # e.g. a message above our receive limit: reconnecting cannot help
                    raise Fatal(
                        f"the lease stream failed for good ({exc.code().name}: "
                        f"{shorten(exc.details() or '', 300, quote=False)})",
                        EXIT_PERMANENT,
                    ) from None
                metrics.LEASE_SERVICE_RECONNECTS.inc()
                log.warning(
                    "lost the lease service (%s: %s); reconnecting, resuming from cursor",
                    exc.code().name,
                    exc.details(),
                )
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 3.0)

    async def _session(
        self, prepared: Prepared, adopted: Callable[[LocalNode], None], changed: Callable[[], None]
    ) -> None:
        setup = prepared.setup
        request = lease_pb2.AcquireLeaseRequest(
            backend_type=setup.backend_type,
            backend_data=setup.backend_data,
            backend_v6_data=setup.backend_v6_data,
            mtu=setup.mtu,
        )
        if self._gate is not None:
            await self._gate()
        reply = await self._retry(
            "AcquireLease", lambda: self.stub.AcquireLease(request, timeout=30, wait_for_ready=True)
        )
        await self._adopt(reply.lease, prepared, adopted)
        async with asyncio.TaskGroup() as streams:
            streams.create_task(follow(self.stub, self.view, changed), name="follow-leases")
            streams.create_task(self._follow_own_lease(prepared, adopted), name="follow-own-lease")

    async def _adopt(
        self, lease: lease_pb2.Lease, prepared: Prepared, adopted: Callable[[LocalNode], None]
    ) -> None:
        """Make ``lease`` this node's: device addresses, masquerade rules, status."""
        public = prepared.public
        node = LocalNode(
            subnet=IPv4Network(lease.subnet) if lease.subnet else None,
            ipv6_subnet=IPv6Network(lease.ipv6_subnet) if lease.ipv6_subnet else None,
            public_ip=IPv4Address(lease.public_ip) if lease.public_ip else public.ipv4,
            public_ipv6=IPv6Address(lease.public_ipv6) if lease.public_ipv6 else public.ipv6,
        )
        if node != self.node:
            log.info(
                "own lease %s (subnet %s%s)",
                lease.key,
                lease.subnet or "-",
                f", {lease.ipv6_subnet}" if lease.ipv6_subnet else "",
            )
        async with self.device_lock:
            await prepared.backend.configure(node)
        self.node, self.own_key = node, lease.key
        self.status.own_lease = lease
        self.status.ip_masq = self.settings.ip_masq
        if self.traffic is not None:  # applied by the rules task at once, off the path to SERVING
            config = prepared.config
            self.traffic.update(
                [
                    MasqNetwork(net, sub)
                    for net, sub in ((config.network, node.subnet), (config.ipv6_network, node.ipv6_subnet))
                    if net is not None and sub is not None
                ]
            )
        adopted(node)

    async def _follow_own_lease(self, prepared: Prepared, adopted: Callable[[LocalNode], None]) -> None:
        async for event in self.stub.WatchLease(lease_pb2.WatchLeaseRequest()):
            if event.kind == WatchLease.CONFLICT:
                if event.conflict != self.status.own_lease_conflict:
                    log.warning("own lease conflict: %s", shorten(event.conflict, 300, quote=False))
                self.status.own_lease_conflict = event.conflict
            elif event.kind == WatchLease.LOST:
                log.warning("own lease %s lost; the lease service is re-acquiring it", event.lease.key)
            elif event.kind == WatchLease.REACQUIRED or event.lease.key != self.own_key:
                await self._adopt(event.lease, prepared, adopted)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            "the lease service closed the WatchLease stream",
        )

    async def watch_devices(self, prepared: Prepared, repaired: Callable[[LocalNode], None]) -> NoReturn:
        """Restore our devices as soon as netlink says one was deleted or changed, then ``repaired(node)``
        (every peer re-programmed); a failure is logged and the watch restarted."""
        backend = prepared.backend
        watcher = DeviceWatcher(lambda: backend.devices)

        async def repair() -> None:
            async with self.device_lock:
                done = await backend.repair(self.node)
            if done:
                log.warning("device repaired (%s); re-programming every peer", "; ".join(done))
                metrics.DEVICE_REPAIRS.inc()
                if self.node is not None:
                    repaired(self.node)

        while True:
            try:
                await repair()  # whatever changed while nobody was watching
                await watcher.run(repair)
            except Exception as exc:  # noqa: BLE001 - a refused repair, a netlink error (EBUSY): retried
                log.warning("device watcher failed (%s); restarting it in 1 s", failure(exc))
                await asyncio.sleep(1.0)

    async def ensure_masq(self) -> None:
        """Repair the FORWARD/masquerade rules (and blackhole routes) if they drifted."""
        if self.traffic is not None:
            await self.traffic.ensure()

    async def keep_rules(self) -> None:
        """The rules task, never ending: every ``--iptables-resync`` seconds (and at once for a new own
        lease) the rules are checked and repaired; without rules it just waits with the other tasks."""
        if self.traffic is None:
            await asyncio.Event().wait()
        else:
            await self.traffic.run_resync(self.settings.iptables_resync)

    async def report(self) -> None:
        """Tell the lease service how far the kernel is applied and which leases were rejected."""
        try:
            await self.stub.ReportBackendStatus(
                lease_pb2.ReportBackendStatusRequest(
                    applied_cursor=self.status.applied_cursor,
                    rejected=list(itertools.islice(self.status.rejected.values(), MAX_REPORTED_REJECTIONS)),
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError:
            pass  # the lease service is away; the next reconcile reports again
