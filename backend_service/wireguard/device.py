"""The WireGuard device: in the kernel where the kernel has WireGuard, else ``wireguard-go``.

``ensure()`` makes ``flannel-wg`` (or ``flannel-wg-v6``) exist, up, with its MTU and the node's key and
listen port, reusing a device that already exists (a restart of the backend changes nothing and drops
nothing). Where ``ip link add ... type wireguard`` is refused (no module), it starts ``wireguard-go
<device>`` as ``wg-quick`` does with ``WG_QUICK_USERSPACE_IMPLEMENTATION``: wireguard-go puts itself in
the background and lives as long as its TUN device, so the device outlives a restart of the backend
just as a kernel device does; deleting the device (``flanneld cleanup``) ends it.

wireguard-go needs only ``CAP_NET_ADMIN`` (to create the TUN device); it is started with every other
capability dropped from all sets (the backend's ``CAP_NET_RAW`` included) and ``no_new_privs``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from flannel_rpc.setpriv import setpriv_prefix

from .. import command
from ..dumps import one_dump_at_a_time
from ..kernel import wgctl

log = logging.getLogger(__name__)

UAPI_DIR = Path("/var/run/wireguard")
START_TIMEOUT = 10.0
KERNEL = "kernel"
USERSPACE = "wireguard-go"


class DeviceError(RuntimeError):
    """The device cannot be made or configured; the message says why and what to install."""


@dataclass(frozen=True)
class DeviceSpec:
    """What one WireGuard device should be."""

    name: str
    mtu: int
    listen_port: int
    key_file: Path
    """Where ``wg`` reads the private key from."""
    public_key: str
    """The key file's public key: a device that reports another one gets the key again."""


async def _link(ipr: AsyncIPRoute, name: str) -> tuple[int, str] | None:
    """(ifindex, link kind: "wireguard" for a kernel device, "tun" for wireguard-go's) or None."""
    async with one_dump_at_a_time(ipr):
        found = await ipr.link_lookup(ifname=name)
    if not found:
        return None
    try:
        links = list(await ipr.link("get", index=found[0]))
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    if not links:
        return None
    info = links[0].get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else ""
    return int(links[0]["index"]), str(kind or "")


def wireguard_go_argv(name: str) -> list[str]:
    """wireguard-go for ``name`` with CAP_NET_ADMIN alone (setpriv drops the rest, cannot regain any)."""
    binary = shutil.which("wireguard-go")
    if binary is None:
        raise DeviceError(
            "this kernel has no WireGuard and wireguard-go is not installed "
            "(Debian: apt install wireguard-go wireguard-tools)"
        )
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return [binary, name]
    return [*setpriv_prefix(setpriv, ("net_admin",)), binary, name]


async def _start_wireguard_go(ipr: AsyncIPRoute, name: str) -> None:
    try:
        done = await command.run(
            wireguard_go_argv(name),
            timeout=START_TIMEOUT,
            merge_stderr=True,
            start_new_session=True,  # its own session: stopping the backend (its process group) leaves it be
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except TimeoutError:
        raise DeviceError(f"wireguard-go {name}: did not start within {START_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        lines = [
            line for line in done.out.splitlines() if line.strip() and "│" not in line and "─" not in line
        ]
        raise DeviceError(f"wireguard-go {name}: exit status {done.returncode}: {lines[-1] if lines else ''}")
    # The daemon has forked; its UAPI socket appears once the device is ready.
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while not (UAPI_DIR / f"{name}.sock").exists() or await _link(ipr, name) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise DeviceError(f"wireguard-go {name}: no device or UAPI socket after {START_TIMEOUT:.0f}s")
        await asyncio.sleep(0.02)


async def ensure(ipr: AsyncIPRoute, spec: DeviceSpec) -> str:
    """Make the device exist, configured and up; returns how it is implemented (kernel or wireguard-go)."""
    link = await _link(ipr, spec.name)
    if link is None:
        try:
            await ipr.link("add", ifname=spec.name, kind="wireguard")
            log.info("created %s (kernel WireGuard)", spec.name)
        except NetlinkError as exc:
            if exc.code not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOENT):
                raise DeviceError(f"cannot create {spec.name}: {exc}") from exc
            log.info("%s: the kernel has no WireGuard (%s); starting wireguard-go", spec.name, exc)
            await _start_wireguard_go(ipr, spec.name)
            log.info("created %s (wireguard-go)", spec.name)
        link = await _link(ipr, spec.name)
        if link is None:
            raise DeviceError(f"{spec.name} vanished right after it was created")
    index, kind = link
    if kind not in ("wireguard", "tun"):
        raise DeviceError(
            f"{spec.name} exists but is a {kind or 'plain'} device, not WireGuard; "
            f"remove it (ip link del {spec.name}) or run flanneld cleanup"
        )
    try:
        state = await wgctl.show(spec.name)
        if state.public_key != spec.public_key or state.listen_port != spec.listen_port:
            await wgctl.set_device(spec.name, spec.key_file, spec.listen_port)
    except wgctl.WgError as exc:
        raise DeviceError(f"{spec.name}: {exc}") from exc
    await ipr.link("set", index=index, mtu=spec.mtu, state="up")
    return KERNEL if kind == "wireguard" else USERSPACE
