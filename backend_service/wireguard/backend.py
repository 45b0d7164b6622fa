"""flannel's wireguard backend: encrypted pod traffic over WireGuard devices.

Devices, as flannel names them: ``flannel-wg`` (IPv4; in the ``auto``/``ipv4``/``ipv6`` modes both
families) and ``flannel-wg-v6`` (IPv6, ``separate`` mode, the default). Each holds the node subnet's
network address as a /32 (/128), has MTU ``MTU - 80`` (the option, else the external interface's), and
listens on ``ListenPort`` (``ListenPortV6``). The private key is flannel's key file (made once, reused);
the lease publishes ``{"PublicKey": "<base64>"}`` in ``BackendData`` (IPv4) and ``BackendV6Data`` (IPv6).

Per peer: a WireGuard peer and a route per subnet (:mod:`.desired`); the device: :mod:`.device`. Both
are kernel objects of the one planner: diffed, applied by delta, repaired on the resync clock, and
stale ones removed after the lease stream is synced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from pyroute2.iproute.linux import AsyncIPRoute

from proto.flannel.v1 import backend_pb2

from ..backend import BackendSetup
from ..config import WIREGUARD, NetworkConfig, WireGuardOptions
from ..desired import DesiredState
from ..kernel import wgctl
from ..kernel.links import ensure_address, link_index
from ..kernel.model import KernelError
from ..kernel.wgctl import DEVICE, DEVICE_V6
from ..leases import PeerLease, WireGuardData
from ..node import LocalNode, PublicInterface
from ..wgkey import Key, WireGuardKeyError
from . import device
from .desired import device_for, wireguard_desired
from .keys import load_or_create

log = logging.getLogger(__name__)


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
            index = await link_index(self.ipr, device_for(version, self.options))
            if index is None:
                raise KernelError(f"{device_for(version, self.options)} vanished")
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

    def desired(self, peers: Sequence[PeerLease], node: LocalNode) -> DesiredState:
        return wireguard_desired(peers, self.options, self.public)

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
