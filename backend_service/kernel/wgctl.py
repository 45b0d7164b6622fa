"""Reading and configuring a WireGuard device with ``wg`` (wireguard-tools).

``wg`` speaks to both implementations through one interface: the kernel's generic netlink family, or
the UAPI socket ``/var/run/wireguard/<device>.sock`` of a userspace implementation (wireguard-go).
So the backend configures kernel and userspace devices with the same code. Secrets never appear on a
command line: the private key is read by ``wg`` from the key file, the pre-shared key from a memfd
handed to ``wg`` as ``/dev/fd/N`` (each open of it starts at the beginning, so one file serves every peer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

from .. import command
from ..desired import WgPeer, sorted_networks

DEVICE = "flannel-wg"
"""flannel's WireGuard device for IPv4 (both families in the auto/ipv4/ipv6 modes)."""
DEVICE_V6 = "flannel-wg-v6"
"""flannel's WireGuard device for IPv6 (``separate`` mode)."""
DEVICES = (DEVICE, DEVICE_V6)
WG_TIMEOUT = 10.0
"""Seconds one ``wg`` call may take."""


class WgError(RuntimeError):
    """``wg`` failed (exit status and its message), timed out, or printed what we cannot read."""


@dataclass(frozen=True)
class PeerState:
    """One peer as ``wg show <dev> dump`` reports it."""

    peer: WgPeer
    latest_handshake: int
    """Unix seconds of the last handshake; 0 when there has been none."""
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class DeviceState:
    """The device: its public key (None without a private key), listen port and peers by public key."""

    public_key: str | None
    listen_port: int
    peers: dict[str, PeerState] = field(default_factory=dict)


def _endpoint(text: str) -> tuple[IPv4Address | IPv6Address, int] | None:
    if text == "(none)":
        return None
    host, _, port = text.rpartition(":")
    return ip_address(host.strip("[]")), int(port)


def parse_dump(device_name: str, text: str) -> DeviceState:
    """``wg show <dev> dump``: the device line, then a line per peer, fields separated by tabs."""
    lines = [line for line in text.splitlines() if line]
    if not lines:
        raise WgError("wg show dump printed nothing")
    try:
        head = lines[0].split("\t")
        device = DeviceState(None if head[1] == "(none)" else head[1], int(head[2]))
        for line in lines[1:]:
            f = line.split("\t")
            allowed = () if f[3] == "(none)" else sorted_networks(ip_network(a) for a in f[3].split(","))
            keepalive = 0 if f[7] == "off" else int(f[7])
            peer = WgPeer(
                device_name, f[0], _endpoint(f[2]), allowed, keepalive, None if f[1] == "(none)" else f[1]
            )
            device.peers[f[0]] = PeerState(peer, int(f[4]), int(f[5]), int(f[6]))
    except (IndexError, ValueError) as exc:
        raise WgError(f"cannot read wg show dump output: {exc}: {text[:200]!r}") from exc
    return device


async def _wg(args: Sequence[str], *, pass_fds: Sequence[int] = (), timeout: float = WG_TIMEOUT) -> str:
    try:
        done = await command.run(["wg", *args], pass_fds=pass_fds, timeout=timeout)
    except FileNotFoundError as exc:
        raise WgError("the wg command (wireguard-tools) is not installed") from exc
    except TimeoutError:
        raise WgError(
            f"wg {args[0]} {args[1] if len(args) > 1 else ''}: no answer within {timeout:.0f}s"
        ) from None
    if done.returncode != 0:
        message = done.err.strip().splitlines()
        raise WgError(
            f"wg {' '.join(args[:2])}: exit status {done.returncode}: {message[-1] if message else ''}"
        )
    return done.out


async def show(device: str) -> DeviceState:
    """The device's keys, port and peers."""
    return parse_dump(device, await _wg(["show", device, "dump"]))


async def set_device(device: str, private_key_file: Path, listen_port: int) -> None:
    """Give ``device`` its private key (from the key file) and listen port."""
    await _wg(["set", device, "listen-port", str(listen_port), "private-key", str(private_key_file)])


def _secret_fd(secret: str) -> int:
    fd = os.memfd_create("flannel-wg-psk", os.MFD_CLOEXEC)
    os.write(fd, f"{secret}\n".encode())
    return fd


async def set_peers(device: str, upserts: Sequence[WgPeer], removes: Sequence[str]) -> None:
    """Add or change ``upserts`` (their allowed IPs replaced) and remove the peers in ``removes``, in one call."""
    if not upserts and not removes:
        return
    args = ["set", device]
    fds: dict[str, int] = {}
    try:
        for peer in upserts:
            args += [
                "peer",
                peer.public_key,
                "allowed-ips",
                ",".join(str(n) for n in peer.allowed_ips),
                "persistent-keepalive",
                str(peer.keepalive) if peer.keepalive else "off",
            ]
            if peer.endpoint is not None:
                args += ["endpoint", peer.endpoint_text]
            if peer.psk is not None:
                if peer.psk not in fds:
                    fds[peer.psk] = _secret_fd(peer.psk)
                args += ["preshared-key", f"/dev/fd/{fds[peer.psk]}"]
            else:
                args += ["preshared-key", "/dev/null"]
        for key in removes:
            args += ["peer", key, "remove"]
        await _wg(args, pass_fds=tuple(fds.values()))
    finally:
        for fd in fds.values():
            os.close(fd)


__all__ = ["DeviceState", "PeerState", "WgError", "parse_dump", "set_device", "set_peers", "show"]
