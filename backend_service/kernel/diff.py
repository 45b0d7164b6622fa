"""Diff desired state against the kernel state we own: the smallest list of changes.

Pure logic. Objects that are already right produce no operation; new and changed ones are
*replaced* (netlink's create-or-replace: never deleted and re-added, so traffic to a still-wanted
peer never sees a gap); objects we own that nobody wants any more are deleted, unless the caller
forbids deletes (before the lease stream is SYNCED we only know part of the cluster, so we write
but delete nothing). Objects are matched by :func:`~backend_service.kernel.model.identity`.

Operations come out in a safe order: FDB and neighbour entries before the routes that use
them; route deletes before the neighbour and FDB entries they used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from ..desired import DesiredState, FdbEntry, Neighbour, Route, WgPeer
from .model import DELETE, REPLACE, KernelRoute, KernelState, Op, default_metric


def _diff_routes(
    desired: Iterable[Route], current: Iterable[KernelRoute], delete: bool
) -> tuple[list[Op], list[Op]]:
    by_dst: dict[object, list[KernelRoute]] = defaultdict(list)
    for kr in current:
        by_dst[kr.route.dst].append(kr)
    changes: list[Op] = []
    deletes: list[Op] = []
    wanted_dsts = set()
    # Sorted only to be deterministic; integers compare far faster than the addresses' text.
    for route in sorted(
        desired,
        key=lambda r: (
            r.dst.version,
            int(r.dst.network_address),
            r.dst.prefixlen,
            r.ifname,
            int(r.gateway) if r.gateway is not None else -1,
        ),
    ):
        wanted_dsts.add(route.dst)
        have = by_dst.get(route.dst, [])
        if any(kr.is_exactly == route for kr in have):
            extra = [kr for kr in have if kr.is_exactly != route]
        else:
            # replace rewrites the default-metric route of this dst, if any; others are duplicates.
            metric = default_metric(route)
            changes.append(Op(REPLACE, route))
            extra = [kr for kr in have if kr.priority != metric]
        if delete:
            deletes.extend(Op(DELETE, kr.route, kr.priority) for kr in extra)
    if delete:
        for dst, krs in by_dst.items():
            if dst not in wanted_dsts:
                deletes.extend(Op(DELETE, kr.route, kr.priority) for kr in krs)
    return changes, deletes


def _diff_neighbours(
    desired: Iterable[Neighbour], current: frozenset[Neighbour], delete: bool
) -> tuple[list[Op], list[Op]]:
    have = {(n.ifname, n.dst): n for n in current}
    changes: list[Op] = []
    wanted = set()
    for n in sorted(desired, key=lambda n: (n.ifname, n.dst.version, int(n.dst))):
        wanted.add((n.ifname, n.dst))
        if have.get((n.ifname, n.dst)) != n:
            changes.append(Op(REPLACE, n))
    deletes = [
        Op(DELETE, n) for key, n in sorted(have.items(), key=lambda kv: str(kv[0])) if key not in wanted
    ]
    return changes, deletes if delete else []


def _diff_fdb(
    desired: Iterable[FdbEntry], current: frozenset[FdbEntry], delete: bool
) -> tuple[list[Op], list[Op]]:
    keys_held = {(e.ifname, e.lladdr) for e in current}
    written = [e for e in sorted(desired, key=lambda e: (e.ifname, e.lladdr)) if e not in current]
    changes = [Op(REPLACE, e) for e in written]
    deletes: list[Op] = []
    if delete:
        rewritten = {(e.ifname, e.lladdr) for e in written} & keys_held
        for e in sorted(current - set(desired), key=lambda e: (e.ifname, e.lladdr, str(e.dst))):
            # A replace rewrites the entry's destination in place; deleting the old one would race it.
            # (An extra appended destination for a replaced MAC goes on the next reconcile.)
            if (e.ifname, e.lladdr) not in rewritten:
                deletes.append(Op(DELETE, e))
    return changes, deletes


def _diff_wg(
    desired: Iterable[WgPeer], current: frozenset[WgPeer], delete: bool
) -> tuple[list[Op], list[Op]]:
    # A replace of a peer rewrites its endpoint, allowed IPs, keepalive and PSK in place.
    changes = [
        Op(REPLACE, p) for p in sorted(desired, key=lambda p: (p.ifname, p.public_key)) if p not in current
    ]
    wanted = {(p.ifname, p.public_key) for p in desired}
    deletes = [
        Op(DELETE, p)
        for p in sorted(current, key=lambda p: (p.ifname, p.public_key))
        if (p.ifname, p.public_key) not in wanted
    ]
    return changes, deletes if delete else []


def diff(desired: DesiredState, current: KernelState, *, delete: bool = True) -> list[Op]:
    """The operations that turn ``current`` into ``desired``; none when they are equal.

    ``delete=False`` (before SYNCED) adds and replaces only.
    """
    fdb_changes, fdb_deletes = _diff_fdb(desired.fdb, current.fdb, delete)
    neigh_changes, neigh_deletes = _diff_neighbours(desired.neighbours, current.neighbours, delete)
    route_changes, route_deletes = _diff_routes(desired.routes, current.routes, delete)
    wg_changes, wg_deletes = _diff_wg(desired.wg_peers, current.wg_peers, delete)
    return (
        wg_changes
        + fdb_changes
        + neigh_changes
        + route_changes
        + route_deletes
        + neigh_deletes
        + fdb_deletes
        + wg_deletes
    )
