"""The vxlan backend, flannel's default: one VXLAN device per address family (:mod:`.device`), and per
peer a route, a permanent neighbour and an FDB entry (:mod:`.desired`).

The device holds the node subnet's network address as a /32 (IPv6: /128). Pods get the underlay MTU
minus 50 (``FLANNEL_MTU``, flannel's value). The lease's backend data is
``{"VNI": <vni>, "VtepMAC": "<mac>"}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyroute2.iproute.linux import AsyncIPRoute

from ..backend import BackendSetup
from ..config import VXLAN, NetworkConfig, VxlanOptions
from ..desired import DesiredState
from ..kernel.links import ensure_address
from ..kernel.model import KernelError
from ..leases import PeerLease, VxlanData
from ..node import LocalNode, PublicInterface
from .desired import vxlan_desired
from .device import VxlanDevice, VxlanDeviceSpec, accept_ra_off, device_name, ensure_device


class VxlanBackend:
    """flannel's vxlan backend over ``public`` (see the module docstring)."""

    backend_type = VXLAN

    def __init__(
        self, ipr: AsyncIPRoute, config: NetworkConfig, public: PublicInterface, *, own_netns: bool = False
    ) -> None:
        """``own_netns``: ``ipr`` is in this process's network namespace, so sysctls under /proc/sys/net
        (``accept_ra``) are the devices' own; a test driving another namespace leaves it False."""
        if not isinstance(config.backend, VxlanOptions):
            raise TypeError(f"VxlanBackend needs vxlan options, got {config.backend!r}")
        self.ipr = ipr
        self.config = config
        self.options: VxlanOptions = config.backend
        self.public = public
        self.own_netns = own_netns
        self.dev4: VxlanDevice | None = None
        self.dev6: VxlanDevice | None = None

    def specs(self) -> list[VxlanDeviceSpec]:
        """The devices this config asks for."""
        out = []
        for version, enabled, local in (
            (4, self.config.enable_ipv4, self.public.ipv4),
            (6, self.config.enable_ipv6, self.public.ipv6),
        ):
            if not enabled:
                continue
            if local is None:
                raise KernelError(
                    f"vxlan over IPv{version} needs an IPv{version} public address on {self.public.ifname}"
                )
            out.append(
                VxlanDeviceSpec(
                    ifname=device_name(self.options.vni, version),
                    vni=self.options.vni,
                    port=self.options.port,
                    local=local,
                    link_index=self.public.ifindex,
                    learning=self.options.learning,
                    gbp=self.options.gbp,
                    mtu=self.options.device_mtu(self.public.mtu, ipv6=version == 6),
                )
            )
        return out

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(s.ifname for s in self.specs())

    async def setup(self) -> BackendSetup:
        data4 = data6 = ""
        for spec in self.specs():
            dev = await ensure_device(self.ipr, spec)
            if self.own_netns:
                accept_ra_off(spec.ifname)
            data = VxlanData(self.options.vni, dev.mac).to_json()
            if spec.local.version == 4:
                self.dev4, data4 = dev, data
            else:
                self.dev6, data6 = dev, data
        main = self.dev4 or self.dev6
        assert main is not None
        return BackendSetup(VXLAN, data4, data6, self.options.pod_mtu(self.public.mtu), main.ifname)

    async def configure(self, node: LocalNode) -> None:
        if self.dev4 is None and self.dev6 is None:
            await self.setup()
        if self.dev4 is not None and node.subnet is not None:
            await ensure_address(self.ipr, self.dev4.ifindex, node.subnet.network_address)
        if self.dev6 is not None and node.ipv6_subnet is not None:
            await ensure_address(self.ipr, self.dev6.ifindex, node.ipv6_subnet.network_address)

    async def repair(self, node: LocalNode | None) -> list[str]:
        """Put the devices back as :meth:`setup` and :meth:`configure` left them: re-create a deleted or
        incompatible device, restore the published MAC, the MTU, the up state and the address. Returns
        what was repaired (empty when nothing was wrong); after a repair every peer's route, neighbour
        and FDB entry must be re-programmed (a re-created device starts empty)."""
        repaired: list[str] = []
        for spec in self.specs():
            published = self.dev4 if spec.local.version == 4 else self.dev6
            dev = await ensure_device(self.ipr, spec)
            if dev.created or (published is not None and dev.ifindex != published.ifindex):
                repaired.append(f"{spec.ifname} re-created")
                if self.own_netns:
                    accept_ra_off(spec.ifname)
            if published is not None and dev.mac != published.mac:
                # the peers know the published MAC: the device must keep it
                await self.ipr.link("set", index=dev.ifindex, address=published.mac)
                repaired.append(f"{spec.ifname} MAC {dev.mac} -> {published.mac}")
            mac = published.mac if published is not None else dev.mac
            fixed = VxlanDevice(dev.ifname, dev.ifindex, mac, dev.mtu, dev.created)
            if spec.local.version == 4:
                self.dev4 = fixed
            else:
                self.dev6 = fixed
        if node is not None:
            if (
                self.dev4 is not None
                and node.subnet is not None
                and await ensure_address(self.ipr, self.dev4.ifindex, node.subnet.network_address)
            ):
                repaired.append(f"{self.dev4.ifname} address {node.subnet.network_address}")
            if (
                self.dev6 is not None
                and node.ipv6_subnet is not None
                and await ensure_address(self.ipr, self.dev6.ifindex, node.ipv6_subnet.network_address)
            ):
                repaired.append(f"{self.dev6.ifname} address {node.ipv6_subnet.network_address}")
        return repaired

    def desired(self, peers: Sequence[PeerLease], node: LocalNode) -> DesiredState:
        dev4 = device_name(self.options.vni, 4) if self.config.enable_ipv4 else None
        dev6 = device_name(self.options.vni, 6) if self.config.enable_ipv6 else None
        return vxlan_desired(peers, self.options, node, self.public.ifname, dev4, dev6)
