"""The vxlan backend, flannel's default: one VXLAN device per address family, and per peer a
route, a permanent neighbour and an FDB entry.

Device: ``flannel.<VNI>`` (IPv6: ``flannel-v6.<VNI>``), ``dstport`` = Port, ``nolearning``
unless Learning, ``local`` = the node's public IP, ``dev`` = the public interface, ``gbp`` when
GBP, MTU = the underlay MTU (the ``MTU`` option, else the external interface's) minus 50 (IPv6: 70);
pods get the underlay MTU minus 50 (``FLANNEL_MTU``, flannel's value). ``accept_ra`` is 0 on it. It holds the node subnet's network
address as a /32 (IPv6: /128) and is up.

VTEP MAC: an existing device that matches is reused as it is, MAC included, never deleted and
re-created; a new one gets :func:`vtep_mac`, derived from the VNI and the public IP, so that a
re-created device has the MAC the peers already know. Published as
``{"VNI": <vni>, "VtepMAC": "<mac>"}``.

Per peer: ``<subnet> via <subnet network address> dev flannel.<VNI> onlink``, neighbour
``<subnet network address> lladdr <VtepMAC> dev flannel.<VNI>`` (permanent) and FDB
``<VtepMAC> dev flannel.<VNI> dst <public IP> self permanent``. With DirectRouting, a peer whose
public IP is on our public interface's directly connected network gets instead
``<subnet> via <public IP> dev <public interface>``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from socket import AF_INET, AF_INET6
from typing import Any

from pyroute2 import AsyncIPRoute

from .backend import BackendSetup
from .config import VXLAN, NetworkConfig, VxlanOptions
from .desired import (
    MODE_DIRECT,
    MODE_VXLAN,
    DesiredBuilder,
    DesiredState,
    FdbEntry,
    IPAddress,
    IPNetwork,
    Neighbour,
    PeerPlan,
    Route,
)
from .kernel import KernelError, link_index
from .leases import PeerLease, VxlanData
from .node import LocalNode, PublicInterface

log = logging.getLogger(__name__)

IFNAMSIZ = 15
IFF_UP = 0x1


def device_name(vni: int, version: int = 4) -> str:
    """flannel's device names: ``flannel.<VNI>`` and ``flannel-v6.<VNI>``."""
    return f"flannel.{vni}" if version == 4 else f"flannel-v6.{vni}"


def vtep_mac(vni: int, public_ip: IPAddress) -> str:
    """A locally administered unicast MAC derived from the VNI and public IP (stable across restarts)."""
    digest = bytearray(hashlib.sha256(f"flannel-py vxlan {vni} {public_ip}".encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in digest)


@dataclass(frozen=True)
class VxlanDeviceSpec:
    """The VXLAN device we want for one address family."""

    ifname: str
    vni: int
    port: int
    local: IPAddress
    link_index: int
    learning: bool
    gbp: bool
    mtu: int

    @property
    def mac(self) -> str:
        """The MAC a newly created device gets."""
        return vtep_mac(self.vni, self.local)


@dataclass(frozen=True)
class VxlanDevice:
    """A VXLAN device as it exists in the kernel after :func:`ensure_device`."""

    ifname: str
    ifindex: int
    mac: str
    mtu: int
    created: bool
    """True when this call created it (or re-created an incompatible one)."""


def _mismatches(spec: VxlanDeviceSpec, link: Any) -> list[str]:
    """Attributes of an existing link that differ from ``spec`` in ways only re-creation fixes."""
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    if kind != "vxlan":
        return [f"kind {kind!r} != 'vxlan'"]
    data = info.get_attr("IFLA_INFO_DATA")
    attrs = dict(data["attrs"]) if data is not None else {}
    local = attrs.get("IFLA_VXLAN_LOCAL") if spec.local.version == 4 else attrs.get("IFLA_VXLAN_LOCAL6")
    have = {
        "vni": attrs.get("IFLA_VXLAN_ID"),
        "port": attrs.get("IFLA_VXLAN_PORT"),
        "local": ipaddress.ip_address(local) if local else None,
        "dev": attrs.get("IFLA_VXLAN_LINK"),
        "learning": bool(attrs.get("IFLA_VXLAN_LEARNING")),
        "gbp": bool(attrs.get("IFLA_VXLAN_GBP", False)),
    }
    want = {
        "vni": spec.vni,
        "port": spec.port,
        "local": spec.local,
        "dev": spec.link_index,
        "learning": spec.learning,
        "gbp": spec.gbp,
    }
    return [f"{k} {have[k]!r} != {want[k]!r}" for k in want if have[k] != want[k]]


async def _get_link(ipr: AsyncIPRoute, index: int) -> Any:
    return (await ipr.link("get", index=index))[0]


async def ensure_device(ipr: AsyncIPRoute, spec: VxlanDeviceSpec) -> VxlanDevice:
    """Reuse the device named ``spec.ifname`` when it matches (fixing only its MTU), else (re)create it.

    The device is left up; addresses are :func:`ensure_address`'s job.
    """
    created = False
    index = await link_index(ipr, spec.ifname)
    if index is not None:
        problems = _mismatches(spec, await _get_link(ipr, index))
        if problems:
            log.warning("device %s is incompatible (%s); re-creating it", spec.ifname, "; ".join(problems))
            await ipr.link("del", index=index)
            index = None
    if index is None:
        kw: dict[str, Any] = {
            "ifname": spec.ifname,
            "kind": "vxlan",
            "vxlan_id": spec.vni,
            "vxlan_port": spec.port,
            "vxlan_learning": 1 if spec.learning else 0,
            "vxlan_link": spec.link_index,
            "address": spec.mac,
            "mtu": spec.mtu,
        }
        kw["vxlan_local" if spec.local.version == 4 else "vxlan_local6"] = str(spec.local)
        if spec.gbp:
            kw["vxlan_gbp"] = True
        try:
            await ipr.link("add", **kw)
        except Exception as e:
            raise KernelError(f"creating VXLAN device {spec.ifname} ({spec}) failed: {e}") from e
        index = await link_index(ipr, spec.ifname)
        if index is None:
            raise KernelError(f"VXLAN device {spec.ifname} vanished right after creation")
        created = True
        log.info(
            "created VXLAN device %s vni %d local %s mac %s", spec.ifname, spec.vni, spec.local, spec.mac
        )
    link = await _get_link(ipr, index)
    if link.get_attr("IFLA_MTU") != spec.mtu:
        await ipr.link("set", index=index, mtu=spec.mtu)
    if not link["flags"] & IFF_UP:  # only when down: a no-op "set up" would still wake the device watcher
        await ipr.link("set", index=index, state="up")
    mac = str(link.get_attr("IFLA_ADDRESS")).lower()
    return VxlanDevice(spec.ifname, index, mac, spec.mtu, created)


IFA_F_NODAD = 0x02


def accept_ra_off(ifname: str) -> None:
    """``net.ipv6.conf.<ifname>.accept_ra = 0``, as flannel sets it on its devices: a router advertisement
    must never give the overlay device an address or a default route. Only meaningful in the caller's own
    network namespace; quietly skipped where IPv6 is off (no such file)."""
    path = Path("/proc/sys/net/ipv6/conf") / ifname / "accept_ra"
    try:
        if path.read_text().strip() != "0":
            path.write_text("0")
    except OSError as exc:
        log.debug("cannot set %s to 0: %s", path, exc)


async def ensure_address(ipr: AsyncIPRoute, ifindex: int, address: IPAddress) -> bool:
    """Make ``address`` (as /32 or /128) the device's only global address of its family; True if changed."""
    changed = False
    family = AF_INET if address.version == 4 else AF_INET6
    prefixlen = address.max_prefixlen
    present = False
    async for msg in await ipr.addr("dump", family=family, index=ifindex):
        if msg["index"] != ifindex or msg["scope"] != 0:
            continue
        addr = ipaddress.ip_address(msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"))
        if addr == address and msg["prefixlen"] == prefixlen:
            present = True
        else:
            log.info("removing stale address %s/%d from ifindex %d", addr, msg["prefixlen"], ifindex)
            await ipr.addr("del", index=ifindex, address=str(addr), prefixlen=msg["prefixlen"])
            changed = True
    if not present:
        # IPv6: no duplicate address detection, which would leave the address "tentative" (unusable
        # as a source) for a second or more after every device creation; it is ours alone anyway.
        extra = {"flags": IFA_F_NODAD} if address.version == 6 else {}
        await ipr.addr("add", index=ifindex, address=str(address), prefixlen=prefixlen, **extra)
        changed = True
    return changed


def vxlan_desired(
    peers: Sequence[PeerLease],
    options: VxlanOptions,
    node: LocalNode,
    public_ifname: str,
    dev4: str | None,
    dev6: str | None,
) -> DesiredState:
    """Routes, neighbours and FDB entries for ``peers`` (pure)."""
    out = DesiredBuilder()
    for peer in peers:
        routes: list[Route] = []
        neighbours: list[Neighbour] = []
        fdb: list[FdbEntry] = []
        modes: set[str] = set()
        families: tuple[tuple[str | None, IPNetwork | None, IPAddress | None, VxlanData | None], ...] = (
            (dev4, peer.subnet, peer.public_ip, peer.vxlan),
            (dev6, peer.ipv6_subnet, peer.public_ipv6, peer.vxlan_v6),
        )
        for dev, subnet, public, data in families:
            if dev is None or subnet is None or public is None or data is None:
                continue
            if options.direct_routing:
                link = node.connected_network(public)
                if link is not None and link.ifname == public_ifname:
                    routes.append(Route(subnet, public, public_ifname))
                    modes.add(MODE_DIRECT)
                    continue
            gateway = subnet.network_address
            routes.append(Route(subnet, gateway, dev, onlink=True))
            neighbours.append(Neighbour(dev, gateway, data.vtep_mac))
            fdb.append(FdbEntry(dev, data.vtep_mac, public))
            modes.add(MODE_VXLAN)
        if modes:
            out.add(
                PeerPlan(peer, MODE_DIRECT if modes == {MODE_DIRECT} else MODE_VXLAN), routes, neighbours, fdb
            )
    return out.build()


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
