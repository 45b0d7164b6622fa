"""The VXLAN device: created, or reused when it matches, and kept as the peers know it.

``flannel.<VNI>`` (IPv6: ``flannel-v6.<VNI>``), ``dstport`` = Port, ``nolearning`` unless Learning,
``local`` = the node's public IP, ``dev`` = the public interface, ``gbp`` when GBP, MTU = the
underlay MTU (the ``MTU`` option, else the external interface's) minus 50 (IPv6: 70). ``accept_ra`` is
0 on it. It is up.

VTEP MAC: an existing device that matches is reused as it is, MAC included, never deleted and
re-created; a new one gets :func:`vtep_mac`, derived from the VNI and the public IP, so that a
re-created device has the MAC the peers already know.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2.iproute.linux import AsyncIPRoute

from ..desired import IPAddress
from ..kernel.links import link_index
from ..kernel.model import KernelError

log = logging.getLogger(__name__)

# CPython's own SHA-256 (``_sha2`` from 3.12): hashlib's is OpenSSL's, and loading libcrypto for one hash per
# device was 3.4 MB of the backend's RSS (the backend loads no ssl either: see backend_service.__main__)
if sys.version_info >= (3, 12):
    from _sha2 import sha256
else:
    from _sha256 import sha256

IFF_UP = 0x1


def device_name(vni: int, version: int = 4) -> str:
    """flannel's device names: ``flannel.<VNI>`` and ``flannel-v6.<VNI>``."""
    return f"flannel.{vni}" if version == 4 else f"flannel-v6.{vni}"


def vtep_mac(vni: int, public_ip: IPAddress) -> str:
    """A locally administered unicast MAC derived from the VNI and public IP (stable across restarts)."""
    digest = bytearray(sha256(f"flannel-py vxlan {vni} {public_ip}".encode()).digest()[:6])
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

    The device is left up; addresses are :func:`~backend_service.kernel.links.ensure_address`'s job.
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
