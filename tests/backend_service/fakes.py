"""In-memory stand-ins for the backend's tests of logic: a kernel and a vxlan backend without devices."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from ipaddress import ip_address, ip_network

from backend_service.backend import BackendSetup
from backend_service.config import VxlanOptions
from backend_service.desired import DesiredState
from backend_service.follow import LeaseView
from backend_service.kernel.model import (
    DELETE,
    ApplyResult,
    Digest,
    Expected,
    Kernel,
    KernelCheck,
    KernelObject,
    KernelSnapshot,
    KernelState,
    Op,
    OpFailure,
    fingerprint,
    identity,
    identity_print,
)
from backend_service.leases import PeerLease, VxlanData
from backend_service.node import ConnectedNetwork, LocalNode
from backend_service.planner import Planner
from backend_service.reconciler import Reconciler
from backend_service.status import Health, Status
from backend_service.vxlan.desired import vxlan_desired
from backend_service.vxlan.device import vtep_mac

DEVICE = "flannel.1"


class FakeKernel:
    """Routes, neighbours and FDB entries in dicts keyed as the kernel keys them; links by name.

    An op on a device that does not exist fails as the kernel would refuse it.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[object, ...], KernelObject] = {}
        self.links = {1: "lo", 2: "eth0", 3: DEVICE}
        self.connected: tuple[ConnectedNetwork, ...] = (
            ConnectedNetwork(ip_network("192.168.77.0/24"), "eth0"),
        )
        self.applied: list[tuple[Op, ...]] = []
        self.reads = 0
        self.checks = 0

    async def read(self, devices: Iterable[str], expect: Expected | None = None) -> KernelSnapshot:
        """What the kernel holds; with ``expect``, as the raw reader leaves it: no object for what is found
        as expected, none at all for a plan that deletes nothing, and every identity noted."""
        self.reads += 1
        objects = list(self.objects.values())
        if expect is not None:
            kept = []
            for obj in objects:
                expect.held(identity_print(obj))
                fp = fingerprint(obj)
                if (fp is None or not expect.seen(fp)) and expect.deletes:
                    kept.append(obj)
            objects = kept
        return KernelSnapshot(KernelState.holding(objects), self.connected, dict(self.links))

    async def check(self, devices: Iterable[str]) -> KernelCheck | None:
        self.checks += 1
        owned = Digest()
        for obj in self.objects.values():
            fp = fingerprint(obj)
            if fp is None:
                return None
            owned.add(fp)
        return KernelCheck(owned, self.connected, dict(self.links))

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        self.applied.append(tuple(ops))
        failures = []
        for op in ops:
            if op.obj.ifname not in self.links.values():
                failures.append(OpFailure(op, f"KernelError: device {op.obj.ifname!r} does not exist"))
            elif op.action == DELETE:
                self.objects.pop(identity(op.obj), None)
            else:
                self.objects[identity(op.obj)] = op.obj
        return ApplyResult(len(ops) - len(failures), tuple(failures))

    def remove(self, obj: KernelObject) -> None:
        """Delete an object by hand, as an operator would."""
        del self.objects[identity(obj)]


class FakeVxlan:
    """The vxlan backend's desired state over ``eth0``, with no device to create."""

    backend_type = "vxlan"
    devices = (DEVICE,)

    def __init__(self, options: VxlanOptions | None = None) -> None:
        self.options = options or VxlanOptions()
        self.configured: list[LocalNode] = []

    async def setup(self) -> BackendSetup:
        data = VxlanData(self.options.vni, vtep_mac(self.options.vni, ip_address("192.168.77.1"))).to_json()
        return BackendSetup("vxlan", data, "", 1450, DEVICE)

    async def configure(self, node: LocalNode) -> None:
        self.configured.append(node)

    async def repair(self, node: LocalNode | None) -> list[str]:
        return []  # no device of its own: nothing is ever broken

    def desired(self, peers: Sequence[PeerLease], node: LocalNode) -> DesiredState:
        return vxlan_desired(peers, self.options, node, "eth0", DEVICE, None)


def bare_reconciler(kernel: Kernel, view: LeaseView, status: Status) -> Reconciler:
    """A reconciler of ``view`` onto ``kernel`` with a vxlan planner and nothing around it: no resync while a
    test runs, reports and resyncs that do nothing."""
    from .factory import config

    return Reconciler(
        Planner(config(), FakeVxlan()),
        kernel,
        view,
        status,
        Health(status, lambda serving: asyncio.sleep(0)),
        resync_period=3600,
        report=lambda: asyncio.sleep(0),
        on_resync=lambda: asyncio.sleep(0),
    )
