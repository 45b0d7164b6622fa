"""Drive the backend library against a namespace, as the glue will: setup, configure, reconcile."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from pyroute2 import AsyncIPRoute

from backend_service.backend import Backend, BackendSetup
from backend_service.config import NetworkConfig
from backend_service.desired import PeerPlan
from backend_service.kernel.apply import NetlinkKernel
from backend_service.kernel.links import link_index
from backend_service.kernel.model import ApplyResult, Kernel, Op
from backend_service.node import LocalNode, PublicInterface
from backend_service.planner import Plan, Planner
from backend_service.session import make_backend
from backend_service.validate import Rejection
from proto.flannel.v1 import lease_pb2

from .factory import held


@dataclass(frozen=True)
class Reconciled:
    """One full reconcile as the reconciler runs it: the plan and what the kernel said."""

    plan: Plan
    result: ApplyResult

    @property
    def ops(self) -> tuple[Op, ...]:
        return self.plan.ops

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def rejected(self) -> tuple[Rejection, ...]:
        return self.plan.rejected

    @property
    def peers(self) -> tuple[PeerPlan, ...]:
        return self.plan.peers


async def reconcile_full(
    kernel: Kernel,
    planner: Planner,
    leases: Sequence[lease_pb2.Lease],
    node: LocalNode,
    *,
    synced: bool = True,
) -> Reconciled:
    """Read the kernel, plan every lease, apply, commit."""
    snapshot = await kernel.read(planner.backend.devices)
    plan = planner.plan_full(held(*leases), node, snapshot, synced=synced)
    result = await kernel.apply(plan.ops)
    planner.commit(plan, result.ok)
    return Reconciled(plan, result)


class KernelNode:
    """One node namespace with the backend library running against it (in this process)."""

    def __init__(self, netns: str, n: int, config: NetworkConfig) -> None:
        self.netns = netns
        self.n = n
        self.config = config
        self.ipr: AsyncIPRoute | None = None
        self.backend: Backend | None = None
        self.kernel: NetlinkKernel | None = None
        self.planner: Planner | None = None
        self.setup_result: BackendSetup | None = None

    async def start(self) -> BackendSetup:
        self.ipr = AsyncIPRoute(netns=self.netns)
        await self.ipr.__aenter__()
        index = await link_index(self.ipr, "eth0")
        assert index is not None
        # what the lease service would hand over for --iface eth0 (the harness's fixed addresses)
        public = PublicInterface(
            "eth0",
            index,
            1500,
            ipv4=IPv4Address(f"192.168.77.{self.n}") if self.config.enable_ipv4 else None,
            ipv6=IPv6Address(f"fd77::{self.n}") if self.config.enable_ipv6 else None,
        )
        self.backend = make_backend(self.ipr, self.config, public)
        self.kernel = NetlinkKernel(self.ipr)
        self.planner = Planner(self.config, self.backend)
        self.setup_result = await self.backend.setup()
        return self.setup_result

    @property
    def setup(self) -> BackendSetup:
        """What :meth:`start` returned."""
        assert self.setup_result is not None, "start() first"
        return self.setup_result

    async def close(self) -> None:
        if self.ipr is not None:
            await self.ipr.__aexit__(None, None, None)
            self.ipr = None

    def lease(self) -> lease_pb2.Lease:
        """This node's lease, carrying the backend data its setup produced."""
        assert self.setup_result is not None
        n = self.n
        return lease_pb2.Lease(
            key=f"10.244.{n}.0-24",
            node_name=f"node-{n}",
            subnet=f"10.244.{n}.0/24" if self.config.enable_ipv4 else "",
            public_ip=f"192.168.77.{n}" if self.config.enable_ipv4 else "",
            ipv6_subnet=f"fd00:10:0:{n}::/64" if self.config.enable_ipv6 else "",
            public_ipv6=f"fd77::{n}" if self.config.enable_ipv6 else "",
            backend_type=self.config.backend_type,
            backend_data=self.setup_result.backend_data,
            backend_v6_data=self.setup_result.backend_v6_data,
        )

    def local(self) -> LocalNode:
        n = self.n
        return LocalNode(
            subnet=IPv4Network(f"10.244.{n}.0/24") if self.config.enable_ipv4 else None,
            ipv6_subnet=IPv6Network(f"fd00:10:0:{n}::/64") if self.config.enable_ipv6 else None,
            public_ip=IPv4Address(f"192.168.77.{n}") if self.config.enable_ipv4 else None,
            public_ipv6=IPv6Address(f"fd77::{n}") if self.config.enable_ipv6 else None,
        )

    async def reconcile(self, leases: Sequence[lease_pb2.Lease], *, synced: bool = True) -> Reconciled:
        assert self.backend is not None and self.kernel is not None and self.planner is not None
        local = self.local()
        await self.backend.configure(local)
        return await reconcile_full(self.kernel, self.planner, leases, local, synced=synced)


@asynccontextmanager
async def started(netns: str, n: int, config: NetworkConfig) -> AsyncIterator[KernelNode]:
    """Node ``n`` set up in ``netns`` (its backend's devices made); closed afterwards."""
    node = KernelNode(netns, n, config)
    try:
        await node.start()
        yield node
    finally:
        await node.close()


@asynccontextmanager
async def node_pair(
    a_ns: str, b_ns: str, config: NetworkConfig
) -> AsyncIterator[tuple[KernelNode, KernelNode]]:
    """Both nodes set up and each programmed with the other as its peer; closed afterwards."""
    a, b = KernelNode(a_ns, 1, config), KernelNode(b_ns, 2, config)
    try:
        await a.start()
        await b.start()
        leases = [a.lease(), b.lease()]
        for node in (a, b):
            report = await node.reconcile(leases)
            assert report.ok, report.result.failures
            assert report.rejected == (), report.rejected
        yield a, b
    finally:
        await a.close()
        await b.close()
