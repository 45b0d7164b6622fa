"""flannel's wireguard backend: encrypted pod traffic over WireGuard devices.

Devices, as flannel names them: ``flannel-wg`` (IPv4; in the ``auto``/``ipv4``/``ipv6`` modes both
families) and ``flannel-wg-v6`` (IPv6, ``separate`` mode, the default). Each holds the node subnet's
network address as a /32 (/128), has MTU ``MTU - 80`` (the option, else the external interface's), and
listens on ``ListenPort`` (``ListenPortV6``). The private key is flannel's key file (made once, reused);
the lease publishes ``{"PublicKey": "<base64>"}`` in ``BackendData`` (IPv4) and ``BackendV6Data`` (IPv6).

Per peer: a WireGuard peer (its public key; endpoint ``<public IP>:<our listen port>``, as flannel
assumes every node listens on the same port; allowed IPs its subnet(s); the PSK and keepalive of the
config) and a route ``<peer subnet> dev flannel-wg proto 70`` for each of its subnets. Both are kernel
objects of the one planner: diffed, applied by delta, repaired on the resync clock, and stale ones
removed after the lease stream is synced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from pyroute2 import AsyncIPRoute

from proto.flannel.v1 import backend_pb2

from ..backend import BackendSetup
from ..config import WIREGUARD, NetworkConfig, WireGuardOptions
from ..desired import MODE_WIREGUARD, DesiredBuilder, DesiredState, PeerPlan, Route, WgPeer, sorted_networks
from ..kernel import wgctl
from ..kernel.links import ensure_address, link_index
from ..kernel.model import KernelError
from ..leases import PeerLease, WireGuardData
from ..node import LocalNode, PublicInterface
from ..wgkey import Key, WireGuardKeyError
from . import device
from .keys import load_or_create

log = logging.getLogger(__name__)

DEVICE = "flannel-wg"
DEVICE_V6 = "flannel-wg-v6"


def _is_private(addr: IPv4Address | IPv6Address) -> bool:
    return addr.is_private


class WireGuardBackend:
    """The wireguard backend (see the module docstring)."""

    backend_type = WIREGUARD

    def __init__(
        self, ipr: AsyncIPRoute, config: NetworkConfig, public: PublicInterface, key_file: Path
    ) -> None:
        if not isinstance(config.backend, WireGuardOptions):
            raise TypeError(f"WireGuardBackend needs wireguard options, got {config.backend!r}")
        self.ipr = ipr
        self.config = config
        self.options: WireGuardOptions = config.backend
        self.public = public
        self.key_file = key_file
        self.public_key: Key | None = None
        self.implementation = ""
        """``kernel`` or ``wireguard-go``, once the devices exist."""

    @property
    def separate(self) -> bool:
        return self.options.mode == "separate"

    def specs(self) -> list[tuple[str, int]]:
        """(device, listen port) for each device this config asks for."""
        out = []
        if self.config.enable_ipv4 or not self.separate:
            out.append((DEVICE, self.options.listen_port))
        if self.config.enable_ipv6 and self.separate:
            out.append((DEVICE_V6, self.options.listen_port_v6))
        return out

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.specs())

    def _device_for(self, version: int) -> str:
        return DEVICE_V6 if version == 6 and self.separate else DEVICE

    async def setup(self) -> BackendSetup:
        try:
            key, created = load_or_create(self.key_file)
        except WireGuardKeyError as exc:
            raise KernelError(str(exc)) from exc
        if created:
            log.info("made a new WireGuard private key in %s", self.key_file)
        self.public_key = key.public()
        mtu = self.options.device_mtu(self.public.mtu)
        try:
            for name, port in self.specs():
                spec = device.DeviceSpec(name, mtu, port, self.key_file, str(self.public_key))
                self.implementation = await device.ensure(self.ipr, spec)
        except device.DeviceError as exc:
            raise KernelError(str(exc)) from exc
        data = WireGuardData(str(self.public_key)).to_json()
        data4 = data if self.config.enable_ipv4 else ""
        data6 = data if self.config.enable_ipv6 else ""
        log.info(
            "WireGuard (%s) on %s, public key %s",
            self.implementation,
            ", ".join(self.devices),
            self.public_key,
        )
        return BackendSetup(
            WIREGUARD, data4, data6, self.options.device_mtu(self.public.mtu), self.devices[0]
        )

    async def configure(self, node: LocalNode) -> None:
        if self.public_key is None:
            await self.setup()
        for version, subnet in ((4, node.subnet), (6, node.ipv6_subnet)):
            if subnet is None:
                continue
            index = await link_index(self.ipr, self._device_for(version))
            if index is None:
                raise KernelError(f"{self._device_for(version)} vanished")
            await ensure_address(self.ipr, index, subnet.network_address)

    async def repair(self, node: LocalNode | None) -> list[str]:
        """A WireGuard device deleted at runtime is made again (same key) with its address; the peers are
        then re-programmed by the caller. Nothing to do when every device exists."""
        missing = [name for name in self.devices if await link_index(self.ipr, name) is None]
        if not missing:
            return []
        await self.setup()
        if node is not None:
            await self.configure(node)
        return [f"{name} re-created" for name in missing]

    def _endpoint(self, peer: PeerLease, version: int) -> tuple[IPv4Address | IPv6Address, int] | None:
        """Where to send to ``peer``: per family in separate mode; by the mode otherwise."""
        if self.separate:
            addr: IPv4Address | IPv6Address | None = peer.public_ip if version == 4 else peer.public_ipv6
            port = self.options.listen_port if version == 4 else self.options.listen_port_v6
            return (addr, port) if addr is not None else None
        v4, v6 = peer.public_ip, peer.public_ipv6
        if self.options.mode == "ipv4" or v6 is None:
            chosen: IPv4Address | IPv6Address | None = v4
        elif self.options.mode == "ipv6" or v4 is None:
            chosen = v6
        # auto: IPv4 when the peer's is public and we have one; else IPv6 when both ends' are public.
        elif not _is_private(v4) and self.public.ipv4 is not None:
            chosen = v4
        elif not _is_private(v6) and self.public.ipv6 is not None and not _is_private(self.public.ipv6):
            chosen = v6
        else:
            chosen = v4
        return (chosen, self.options.listen_port) if chosen is not None else None

    def desired(self, peers: Sequence[PeerLease], node: LocalNode) -> DesiredState:
        out = DesiredBuilder()
        keepalive, psk = self.options.keepalive, self.options.psk
        for peer in peers:
            wg: list[WgPeer] = []
            routes: list[Route] = []
            families = [(4, peer.subnet, peer.wireguard), (6, peer.ipv6_subnet, peer.wireguard_v6)]
            if self.separate:
                for version, subnet, data in families:
                    if subnet is None or data is None:
                        continue
                    dev = self._device_for(version)
                    wg.append(
                        WgPeer(dev, data.public_key, self._endpoint(peer, version), (subnet,), keepalive, psk)
                    )
                    routes.append(Route(subnet, None, dev))
            else:
                data = peer.wireguard or peer.wireguard_v6
                nets = [subnet for _, subnet, _ in families if subnet is not None]
                if data is None or not nets:
                    continue
                wg.append(
                    WgPeer(
                        DEVICE,
                        data.public_key,
                        self._endpoint(peer, 4),
                        sorted_networks(nets),
                        keepalive,
                        psk,
                    )
                )
                routes += [Route(net, None, DEVICE) for net in nets]
            if wg:
                out.add(PeerPlan(peer, MODE_WIREGUARD), routes=routes, wg_peers=wg)
        return out.build()

    async def status(self, programmed: Mapping[str, str]) -> backend_pb2.WireGuardStatus:
        """The devices as ``wg`` reads them now: every peer with its endpoint, allowed IPs, last handshake and
        traffic; ``programmed`` maps a peer's public key to the lease it was programmed for."""
        reply = backend_pb2.WireGuardStatus(
            implementation=self.implementation,
            public_key=str(self.public_key or ""),
            devices=list(self.devices),
            listen_port=self.options.listen_port,
            listen_port_v6=self.options.listen_port_v6,
        )
        for name in self.devices:
            try:
                state = await wgctl.show(name)
            except wgctl.WgError as exc:
                reply.error = str(exc)
                continue
            for key, peer in sorted(state.peers.items()):
                out = reply.peers.add(
                    device=name,
                    public_key=key,
                    endpoint=peer.peer.endpoint_text,
                    allowed_ips=[str(n) for n in peer.peer.allowed_ips],
                    rx_bytes=peer.rx_bytes,
                    tx_bytes=peer.tx_bytes,
                    lease_key=programmed.get(key, ""),
                )
                if peer.latest_handshake:
                    stamp = Timestamp()
                    stamp.FromDatetime(datetime.fromtimestamp(peer.latest_handshake, UTC))
                    out.latest_handshake.CopyFrom(stamp)
        return reply
