"""What the wireguard backend wants in the kernel per peer (pure).

Per peer: a WireGuard peer (its public key; endpoint ``<public IP>:<our listen port>``, as flannel
assumes every node listens on the same port; allowed IPs its subnet(s); the PSK and keepalive of the
config) and a route ``<peer subnet> dev flannel-wg proto 70`` for each of its subnets.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from ..config import WireGuardOptions
from ..desired import MODE_WIREGUARD, DesiredBuilder, DesiredState, PeerPlan, Route, WgPeer, sorted_networks
from ..kernel.wgctl import DEVICE, DEVICE_V6
from ..leases import PeerLease
from ..node import PublicInterface


def device_for(version: int, options: WireGuardOptions) -> str:
    """The device that carries address family ``version``: its own in ``separate`` mode, else ``flannel-wg``."""
    return DEVICE_V6 if version == 6 and options.mode == "separate" else DEVICE


def _is_private(addr: IPv4Address | IPv6Address) -> bool:
    return addr.is_private


def _endpoint(
    peer: PeerLease, version: int, options: WireGuardOptions, public: PublicInterface
) -> tuple[IPv4Address | IPv6Address, int] | None:
    """Where to send to ``peer``: per family in separate mode; by the mode otherwise."""
    if options.mode == "separate":
        addr: IPv4Address | IPv6Address | None = peer.public_ip if version == 4 else peer.public_ipv6
        port = options.listen_port if version == 4 else options.listen_port_v6
        return (addr, port) if addr is not None else None
    v4, v6 = peer.public_ip, peer.public_ipv6
    if options.mode == "ipv4" or v6 is None:
        chosen: IPv4Address | IPv6Address | None = v4
    elif options.mode == "ipv6" or v4 is None:
        chosen = v6
    # auto: IPv4 when the peer's is public and we have one; else IPv6 when both ends' are public.
    elif not _is_private(v4) and public.ipv4 is not None:
        chosen = v4
    elif not _is_private(v6) and public.ipv6 is not None and not _is_private(public.ipv6):
        chosen = v6
    else:
        chosen = v4
    return (chosen, options.listen_port) if chosen is not None else None


def wireguard_desired(
    peers: Sequence[PeerLease], options: WireGuardOptions, public: PublicInterface
) -> DesiredState:
    """A WireGuard peer and a route per subnet for each of ``peers`` (pure)."""
    separate = options.mode == "separate"
    out = DesiredBuilder()
    keepalive, psk = options.keepalive, options.psk
    for peer in peers:
        wg: list[WgPeer] = []
        routes: list[Route] = []
        families = [(4, peer.subnet, peer.wireguard), (6, peer.ipv6_subnet, peer.wireguard_v6)]
        if separate:
            for version, subnet, data in families:
                if subnet is None or data is None:
                    continue
                dev = device_for(version, options)
                wg.append(
                    WgPeer(
                        dev,
                        data.public_key,
                        _endpoint(peer, version, options, public),
                        (subnet,),
                        keepalive,
                        psk,
                    )
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
                    _endpoint(peer, 4, options, public),
                    sorted_networks(nets),
                    keepalive,
                    psk,
                )
            )
            routes += [Route(net, None, DEVICE) for net in nets]
        if wg:
            out.add(PeerPlan(peer, MODE_WIREGUARD), routes=routes, wg_peers=wg)
    return out.build()
