"""Links by name and index, and a device's own address: the small pyroute2 look-ups every backend needs."""

from __future__ import annotations

import ipaddress
import logging
from socket import AF_INET, AF_INET6
from typing import Any

from pyroute2.iproute.linux import AsyncIPRoute

from ..desired import IPAddress
from ..dumps import one_dump_at_a_time
from .model import KernelError

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


async def link_names(ipr: AsyncIPRoute) -> dict[int, str]:
    """ifindex → ifname for every link."""
    async with one_dump_at_a_time(ipr):
        return {link["index"]: _attr(link, "IFLA_IFNAME") async for link in await ipr.link("dump")}


async def link_index(ipr: AsyncIPRoute, ifname: str) -> int | None:
    """The index of ``ifname``, or None."""
    async with one_dump_at_a_time(ipr):
        found = await ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


class LinkIndexes:
    """ifname → ifindex, each looked up once until :meth:`clear` or :meth:`learn` (a device re-created
    in between has a new index: an op sent to the old one fails, and the caller clears)."""

    def __init__(self, ipr: AsyncIPRoute) -> None:
        self._ipr = ipr
        self._index: dict[str, int] = {}

    def clear(self) -> None:
        self._index.clear()

    def learn(self, links: dict[int, str]) -> None:
        """Replace what is known by ``links`` (ifindex → ifname, as a read of the kernel found them)."""
        self._index = {name: idx for idx, name in links.items()}

    def known(self, ifname: str) -> int | None:
        """The index of ``ifname`` if it was looked up or learned already (no await: per op of a batch)."""
        return self._index.get(ifname)

    async def get(self, ifname: str) -> int:
        """The index of ``ifname``; :class:`KernelError` when there is no such device."""
        idx = self._index.get(ifname)
        if idx is None:
            found = await link_index(self._ipr, ifname)
            if found is None:
                raise KernelError(f"device {ifname!r} does not exist")
            idx = self._index[ifname] = found
        return idx


async def ensure_address(ipr: AsyncIPRoute, ifindex: int, address: IPAddress) -> bool:
    """Make ``address`` (as /32 or /128) the device's only global address of its family; True if changed."""
    changed = False
    family = AF_INET if address.version == 4 else AF_INET6
    prefixlen = address.max_prefixlen
    present = False
    async with one_dump_at_a_time(ipr):
        found = [msg async for msg in await ipr.addr("dump", family=family, index=ifindex)]
    for msg in found:
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
