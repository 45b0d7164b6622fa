"""``flannel-backend cleanup [--dry-run]``: remove every kernel object flannel-py made, and nothing else.

A normal stop never tears the dataplane down (flannel issue #2237); this explicit command does. What is
ours is what the reconciler owns (see :mod:`backend_service.desired`):

- VXLAN devices named ``flannel.<VNI>`` / ``flannel-v6.<VNI>`` (deleting one takes its routes,
  neighbours and FDB entries with it; they are listed one by one all the same);
- routes with protocol ``RTPROT_FLANNEL`` (70) anywhere (host-gw, DirectRouting);
- the masquerade/forward rules, removed by :mod:`backend_service.masq`'s own cleanup (iptables and
  nftables both: whichever mode ran before).

``--dry-run`` prints the same list and changes nothing. Exit status 0 when everything listed is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from pyroute2.iproute.linux import AsyncIPRoute

from .blackhole import remove_blackholes
from .kernel.apply import TemplateApplier
from .kernel.model import DELETE, KernelError, Op
from .kernel.read import read_kernel
from .masq import Commands, MasqError, cleanup_all

log = logging.getLogger(__name__)

OUR_DEVICE = re.compile(r"flannel(-v6)?\.[0-9]+")


@dataclass(frozen=True)
class Item:
    """One thing cleanup removes: its kind and how ``ip``/``iptables`` would show it."""

    kind: str  # "device", "route", "neighbour", "fdb", "firewall"
    text: str

    def __str__(self) -> str:
        return self.text


async def our_devices(ipr: AsyncIPRoute) -> list[tuple[int, str]]:
    """(index, name) of every VXLAN device with one of our names."""
    found = []
    async for link in await ipr.link("dump"):
        name = link.get_attr("IFLA_IFNAME")
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if name and OUR_DEVICE.fullmatch(name) and kind == "vxlan":
            found.append((link["index"], name))
    return found


async def kernel_items(ipr: AsyncIPRoute) -> tuple[list[Item], list[Op], list[int]]:
    """What is ours in the kernel: items to print, route deletions (routes off our devices), devices."""
    devices = await our_devices(ipr)
    names = {name for _, name in devices}
    snapshot = await read_kernel(ipr, names)
    items = [Item("device", f"device {name}") for _, name in devices]
    ops: list[Op] = []
    for kernel_route in snapshot.state.routes:
        route = kernel_route.route
        items.append(Item("route", f"{route} proto {kernel_route.proto}"))
        if route.ifname not in names:  # the others go with their device
            ops.append(Op(DELETE, route, kernel_route.priority))
    items += [Item("neighbour", str(n)) for n in sorted(snapshot.state.neighbours, key=str)]
    items += [Item("fdb", str(f)) for f in sorted(snapshot.state.fdb, key=str)]
    return items, ops, [index for index, _ in devices]


async def _output(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return await Commands().run(argv)
    except MasqError:
        return None


async def firewall_items() -> list[Item]:
    """Our iptables chains and jumps, and our nftables tables, as they are now."""
    items: list[Item] = []
    for v, save in ((4, "iptables-save"), (6, "ip6tables-save")):
        for table in ("nat", "filter"):
            text = await _output([save, "-t", table])
            for line in (text or "").splitlines():
                if "FLANNEL" in line and line.startswith((":", "-A")):
                    items.append(Item("firewall", f"firewall IPv{v} {table}: {line}"))
    listing = await _output(["nft", "list", "tables"])
    for line in (listing or "").splitlines():
        if re.fullmatch(r"table (ip|ip6) flannel-ipv[46]", line.strip()):
            items.append(Item("firewall", f"firewall nftables {line.strip()}"))
    return items


async def remove_firewall() -> list[str]:
    """masq's own cleanup of both modes (whichever tools exist); failures as text."""
    try:
        await cleanup_all()
    except MasqError as exc:
        return [str(exc)]
    return []


async def cleanup(*, dry_run: bool, out: TextIO = sys.stdout) -> int:
    """List (and unless ``dry_run`` remove) everything ours; 0 when done, 1 when something stayed."""
    async with AsyncIPRoute() as ipr:
        items, route_ops, devices = await kernel_items(ipr)
        items += await firewall_items()
        verb = "would remove" if dry_run else "removing"
        for item in items:
            print(f"{verb} {item}", file=out)
        if not items:
            print("nothing of flannel-py's to remove", file=out)
        if dry_run:
            return 0
        failures: list[str] = []
        result = await TemplateApplier(ipr).apply(route_ops)
        failures += [str(f) for f in result.failures]
        for index in devices:
            try:
                await ipr.link("del", index=index)
            except Exception as exc:  # noqa: BLE001 - gone meanwhile, or refused: report, continue with the rest
                failures.append(f"deleting device index {index}: {exc}")
        failures += await remove_firewall()
        for dst in await remove_blackholes(ipr):  # --ip-blackhole-route's, protocol 70
            print(f"removed blackhole route {dst}", file=out)
        left, _, _ = await kernel_items(ipr)
        left += await firewall_items()
    for failure in failures:
        print(f"failed: {failure}", file=out)
    for item in left:
        print(f"still present: {item}", file=out)
    return 1 if failures or left else 0


def main(argv: Sequence[str]) -> int:
    """``flannel-backend cleanup [--dry-run] [-v]``."""
    parser = argparse.ArgumentParser(
        prog="flannel-backend cleanup",
        description="Remove every VXLAN device, route, neighbour, FDB entry and firewall rule flannel-py "
        "created in this network namespace, and nothing else. A normal stop never does this.",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be removed; change nothing")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        return asyncio.run(cleanup(dry_run=args.dry_run))
    except KernelError as exc:
        print(f"flannel-backend cleanup: {exc}", file=sys.stderr)
        return 1
