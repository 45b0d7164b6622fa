"""``flannelctl doctor <peer>``: follow one peer down the data path and name the first thing that is wrong.

lease (the lease service's stream) → accepted (not among the backend's rejected leases) → programmed
(among GetStatus's peers) → kernel of the current network namespace (device up, route, neighbour, FDB).
Each step is a :class:`Check`; the verdict is the first failed check's problem, or "ok".
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import grpc

from flannelctl.command import Command
from flannelctl.connect import CtlError, answering, backend_endpoint, lease_endpoint, rpc_error_text
from flannelctl.kernel import Kernel, KernelReadError, KernelView
from flannelctl.leases import read_snapshot
from flannelctl.output import JSON, dump, lease_dict
from proto.flannel.v1 import backend_pb2, lease_pb2

OK, FAIL, SKIP = "ok", "fail", "skip"


@dataclass
class Check:
    """One step of the diagnosis: ``problem`` is the verdict when it failed."""

    name: str
    status: str
    detail: str
    problem: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Diagnosis:
    target: str
    lease: lease_pb2.Lease | None
    checks: list[Check] = field(default_factory=list)
    verdict: str = ""

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)


def match_leases(target: str, leases: Sequence[lease_pb2.Lease]) -> list[lease_pb2.Lease]:
    """Leases named by ``target``: a subnet (CIDR), a key, a node name, a public IP or an address in a subnet."""
    exact = [lease for lease in leases if target in (lease.key, lease.node_name)]
    if exact:
        return exact
    try:
        if "/" in target:
            net = ipaddress.ip_network(target, strict=False)
            return [lease for lease in leases if str(net) in (lease.subnet, lease.ipv6_subnet)]
        addr = ipaddress.ip_address(target)
    except ValueError:
        return []
    by_public = [lease for lease in leases if str(addr) in (lease.public_ip, lease.public_ipv6)]
    if by_public:
        return by_public
    return [
        lease
        for lease in leases
        for text in (lease.subnet, lease.ipv6_subnet)
        if text and addr in ipaddress.ip_network(text, strict=False)
    ]


def _vtep_mac(data: str) -> str | None:
    try:
        parsed = json.loads(data) if data else None
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    value = next((v for k, v in parsed.items() if k.lower() == "vtepmac"), None)
    return value.lower() if isinstance(value, str) else None


def _same_net(dst: str, subnet: str) -> bool:
    try:
        return ipaddress.ip_network(dst, strict=False) == ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        return False


def _route_text(route: dict[str, Any]) -> str:
    parts = [route.get("dst", "?")]
    if route.get("gateway"):
        parts.append(f"via {route['gateway']}")
    if route.get("dev"):
        parts.append(f"dev {route['dev']}")
    return " ".join(parts)


def kernel_checks(
    kernel: KernelView,
    lease: lease_pb2.Lease,
    mode: str,
    device: str,
    families: tuple[int, ...],
    wg_devices: Sequence[str] = (),
) -> list[Check]:
    """What the backend should have put in the kernel for ``lease`` in ``mode``, checked one object at a time."""
    checks: list[Check] = []
    vni = device.rsplit(".", 1)[-1] if device else ""
    for family, subnet, public, data in (
        (4, lease.subnet, lease.public_ip, lease.backend_data),
        (6, lease.ipv6_subnet, lease.public_ipv6, lease.backend_v6_data),
    ):
        if not subnet or family not in families:
            continue
        suffix = "" if family == 4 else "6"
        if mode == "vxlan":
            dev = f"flannel.{vni}" if family == 4 else f"flannel-v6.{vni}"
            gateway = str(ipaddress.ip_network(subnet, strict=False).network_address)
            checks += _vxlan_checks(kernel, suffix, dev, subnet, gateway, public, _vtep_mac(data))
        elif mode == "wireguard":
            dev = "flannel-wg-v6" if family == 6 and "flannel-wg-v6" in wg_devices else "flannel-wg"
            checks.append(_route_check(kernel, f"route{suffix}", subnet, "", dev))
        else:
            checks.append(_route_check(kernel, f"route{suffix}", subnet, public, None))
    return checks


def _route_check(kernel: KernelView, name: str, subnet: str, gateway: str, dev: str | None) -> Check:
    """The route to ``subnet`` via ``gateway`` (none when empty: a route on ``dev`` alone)."""
    if gateway:
        expected = f"{subnet} via {gateway}" + (f" dev {dev} onlink" if dev else "")
    else:
        expected = f"{subnet} dev {dev}"
    routes = [r for r in kernel.routes(subnet) if _same_net(r.get("dst", ""), subnet)]
    if not routes:
        return Check(
            name,
            FAIL,
            f"no route to {subnet} (expected {expected})",
            f"the route to {subnet} is missing (expected {expected})",
        )
    good = [
        r for r in routes if r.get("gateway") == (gateway or None) and (dev is None or r.get("dev") == dev)
    ]
    if not good:
        seen = "; ".join(_route_text(r) for r in routes)
        return Check(
            name,
            FAIL,
            f"{seen} (expected {expected})",
            f"the route to {subnet} is wrong: {seen}, expected {expected}",
        )
    return Check(name, OK, _route_text(good[0]))


def _vxlan_checks(
    kernel: KernelView, suffix: str, dev: str, subnet: str, gateway: str, public: str, mac: str | None
) -> list[Check]:
    checks: list[Check] = []
    link = kernel.link(dev)
    if link is None:
        checks.append(
            Check(f"device{suffix}", FAIL, f"no device {dev}", f"the VXLAN device {dev} does not exist")
        )
    elif "UP" not in link.get("flags", []):
        checks.append(Check(f"device{suffix}", FAIL, f"{dev} is down", f"the VXLAN device {dev} is down"))
    else:
        checks.append(Check(f"device{suffix}", OK, f"{dev} is up (MTU {link.get('mtu', '?')})"))
    checks.append(_route_check(kernel, f"route{suffix}", subnet, gateway, dev))
    if mac is None:
        checks.append(
            Check(
                f"neighbour{suffix}",
                FAIL,
                "the lease's backend data has no VtepMAC",
                f"the lease for {subnet} has no VtepMAC in its backend data",
            )
        )
        return checks
    neighbours = [n for n in kernel.neighbours(dev) if n.get("dst") == gateway]
    if not neighbours:
        checks.append(
            Check(
                f"neighbour{suffix}",
                FAIL,
                f"no neighbour {gateway} on {dev} (expected lladdr {mac})",
                f"the neighbour {gateway} lladdr {mac} on {dev} is missing",
            )
        )
    elif str(neighbours[0].get("lladdr", "")).lower() != mac:
        checks.append(
            Check(
                f"neighbour{suffix}",
                FAIL,
                f"{gateway} lladdr {neighbours[0].get('lladdr')} (expected {mac})",
                f"the neighbour {gateway} on {dev} has lladdr {neighbours[0].get('lladdr')}, expected {mac}",
            )
        )
    else:
        checks.append(
            Check(
                f"neighbour{suffix}",
                OK,
                f"{gateway} lladdr {mac} dev {dev} {','.join(neighbours[0].get('state', []))}".rstrip(),
            )
        )
    entries = [e for e in kernel.fdb(dev) if str(e.get("mac", "")).lower() == mac]
    if not entries:
        checks.append(
            Check(
                f"fdb{suffix}",
                FAIL,
                f"no FDB entry for {mac} on {dev} (expected dst {public})",
                f"the FDB entry {mac} dst {public} on {dev} is missing",
            )
        )
    elif not any(e.get("dst") == public for e in entries):
        dsts = ", ".join(str(e.get("dst")) for e in entries)
        checks.append(
            Check(
                f"fdb{suffix}",
                FAIL,
                f"{mac} dst {dsts} (expected {public})",
                f"the FDB entry for {mac} on {dev} points to {dsts}, expected {public}",
            )
        )
    else:
        checks.append(Check(f"fdb{suffix}", OK, f"{mac} dst {public} dev {dev}"))
    return checks


def diagnose(
    target: str,
    leases: Sequence[lease_pb2.Lease],
    status: backend_pb2.GetStatusResponse,
    kernel: KernelView,
    families: tuple[int, ...] = (4, 6),
) -> Diagnosis:
    """The checks for ``target`` given the lease service's leases, the backend's status and the kernel."""
    matches = match_leases(target, leases)
    if not matches:
        check = Check(
            "lease",
            FAIL,
            f"none of the {len(leases)} leases matches {target!r}",
            f"no lease for {target}: the lease service knows {len(leases)} leases and none is it "
            "(has that node acquired one? does it use the same etcd prefix / cluster?)",
        )
        return _verdict(Diagnosis(target, None, [check]), status)
    lease = matches[0]
    more = (
        f" ({len(matches) - 1} more match: {', '.join(m.key for m in matches[1:])})"
        if len(matches) > 1
        else ""
    )
    subnets = ", ".join(s for s in (lease.subnet, lease.ipv6_subnet) if s) or "no subnet"
    result = Diagnosis(
        target,
        lease,
        [
            Check(
                "lease",
                OK,
                f"{lease.key}: {subnets}, public IP {lease.public_ip or lease.public_ipv6 or '-'}, "
                f"{lease.backend_type or '-'} {lease.backend_data or ''}".rstrip()
                + more,
            )
        ],
    )
    if status.HasField("own_lease") and status.own_lease.key == lease.key:
        result.checks.append(Check("own", OK, "this is this node's own lease: nothing is programmed for it"))
        result.verdict = f"ok: {lease.key} is this node's own lease"
        return result
    rejected = next((r for r in status.rejected if r.lease.key == lease.key), None)
    if rejected is not None:
        result.checks.append(
            Check(
                "accepted",
                FAIL,
                f"rejected: {rejected.reason}: {rejected.message}",
                f"the backend rejected lease {lease.key}: {rejected.reason}: {rejected.message}",
            )
        )
        return _verdict(result, status)
    result.checks.append(
        Check("accepted", OK, f"not among the backend's {len(status.rejected)} rejected leases")
    )
    peer = next((p for p in status.peers if p.lease.key == lease.key), None)
    if peer is None:
        why = (
            "the backend has not applied the lease stream's snapshot yet (synced: false)"
            if not status.synced
            else f"the backend has not programmed {lease.key}"
        )
        result.checks.append(
            Check("programmed", FAIL, f"not among the backend's {len(status.peers)} peers", why)
        )
        return _verdict(result, status)
    result.checks.append(
        Check("programmed", OK, f"peer in mode {peer.mode} on {status.device or 'the underlay'}")
    )
    try:
        result.checks += kernel_checks(
            kernel, lease, peer.mode, status.device, families, status.wireguard.devices
        )
    except KernelReadError as exc:
        result.checks.append(Check("kernel", FAIL, str(exc), f"cannot read the kernel: {exc}"))
    if peer.mode == "wireguard":
        result.checks += wireguard_checks(lease, status.wireguard)
    return _verdict(result, status)


def wireguard_checks(lease: lease_pb2.Lease, wg: backend_pb2.WireGuardStatus) -> list[Check]:
    """The peer on the WireGuard devices (as the backend read them for GetStatus): there, and shaken hands."""
    if wg.error:
        return [Check("wireguard", FAIL, wg.error, f"the WireGuard devices cannot be read: {wg.error}")]
    held = [p for p in wg.peers if p.lease_key == lease.key]
    if not held:
        return [
            Check(
                "wireguard",
                FAIL,
                f"no WireGuard peer for {lease.key} on {', '.join(wg.devices)}",
                f"the WireGuard peer of {lease.key} is missing",
            )
        ]
    checks = []
    for p in held:
        where = (
            f"{p.public_key} endpoint {p.endpoint or '-'} allowed-ips {','.join(p.allowed_ips)} on {p.device}"
        )
        checks.append(Check("wireguard", OK, where))
        if not p.HasField("latest_handshake"):
            port = p.endpoint.rsplit(":", 1)[-1] if p.endpoint else "?"
            checks.append(
                Check(
                    "handshake",
                    FAIL,
                    f"no handshake with {p.endpoint or p.public_key} yet",
                    f"no WireGuard handshake with {lease.key} at {p.endpoint or '-'}: the two nodes' "
                    f"keys or PSK differ, or UDP to port {port} is blocked between them (a handshake "
                    "happens at the first packet: ping a pod there first)",
                )
            )
        else:
            stamp = p.latest_handshake.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
            checks.append(Check("handshake", OK, f"latest {stamp}, {p.rx_bytes} bytes in, {p.tx_bytes} out"))
    return checks


def _verdict(result: Diagnosis, status: backend_pb2.GetStatusResponse) -> Diagnosis:
    failed = next((c for c in result.checks if c.status == FAIL), None)
    if failed is None:
        assert result.lease is not None
        subnets = ", ".join(s for s in (result.lease.subnet, result.lease.ipv6_subnet) if s)
        result.verdict = (
            f"ok: {result.lease.key} ({subnets}) has a lease, is accepted, programmed and in the kernel"
        )
        return result
    verdict = f"problem: {failed.problem}"
    outcome = status.last_reconcile_outcome
    if failed.name.startswith(("device", "route", "neighbour", "fdb")):
        if outcome == "ok":
            verdict += (
                "; the backend's last reconcile succeeded, so something else changed the kernel since "
                "(the backend restores it on its next resync)"
            )
        elif outcome:
            verdict += f"; the backend's last reconcile failed: {outcome}"
    elif failed.name == "programmed" and outcome and outcome != "ok":
        verdict += f"; last reconcile: {outcome}"
    result.verdict = verdict
    return result


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("peer", help="peer subnet (10.244.3.0/24), lease key, node name, public IP or pod IP")


def run(args: argparse.Namespace) -> int:
    with answering(lease_endpoint(args.run_dir), args.timeout) as conn:
        snapshot = read_snapshot(conn)
        families: tuple[int, ...] = (4, 6)
        try:
            config = conn.lease_stub().GetNetworkConfig(
                lease_pb2.GetNetworkConfigRequest(), timeout=conn.timeout
            )
            families = tuple(
                f for f, on in ((4, config.config.enable_ipv4), (6, config.config.enable_ipv6)) if on
            )
        except grpc.RpcError:
            pass  # the config only narrows the address families checked
    with answering(backend_endpoint(args.run_dir), args.timeout) as conn:
        try:
            status = conn.backend_stub().GetStatus(backend_pb2.GetStatusRequest(), timeout=conn.timeout)
        except grpc.RpcError as exc:
            raise CtlError(f"GetStatus on {conn.endpoint.socket} failed: {rpc_error_text(exc)}") from None
    result = diagnose(args.peer, snapshot.leases, status, Kernel(), families)
    if args.output == JSON:
        dump(
            {
                "target": result.target,
                "lease": lease_dict(result.lease) if result.lease is not None else None,
                "checks": [c.as_dict() for c in result.checks],
                "ok": result.ok,
                "verdict": result.verdict,
            }
        )
    else:
        width = max(len(c.name) for c in result.checks)
        for check in result.checks:
            mark = {OK: "[ok]  ", FAIL: "[FAIL]", SKIP: "[skip]"}[check.status]
            print(f"{mark} {check.name.ljust(width)}  {check.detail}")
        print(result.verdict)
    return 0 if result.ok else 1


COMMAND = Command(
    "doctor",
    help="why can this node not reach a peer?",
    description="Check one peer (a subnet, lease key, node name or IP) from lease to kernel: "
    "its lease, whether the backend rejected it, whether it is programmed, and the "
    "device, route, neighbour and FDB entry in this network namespace. Exit status "
    "1 when something is wrong; the last line says what.",
    run=run,
    arguments=_arguments,
)
