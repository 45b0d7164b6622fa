"""``flannelctl status``: both services as they describe themselves, their health, this node's lease, the
network config and what the backend told the kernel (GetStatus)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from flannelctl.command import Command
from flannelctl.connect import Connection, CtlError, backend_endpoint, lease_endpoint, rpc_error_text
from flannelctl.output import JSON, dump, lease_dict, message_dict
from proto.flannel.v1 import backend_pb2, backend_pb2_grpc, lease_pb2, lease_pb2_grpc

T = TypeVar("T")


def _call(what: Callable[[], T]) -> T | dict[str, str]:
    """A call's reply, or ``{"error": "CODE: details"}``: a reachable service may still refuse a call."""
    try:
        return what()
    except grpc.RpcError as exc:
        return {"error": rpc_error_text(exc)}


def own_lease(conn: Connection, wait: float) -> lease_pb2.Lease | None:
    """This node's lease: the first message of WatchLease (none comes while no lease is held)."""
    call = conn.lease_stub().WatchLease(lease_pb2.WatchLeaseRequest(), timeout=wait)
    try:
        for event in call:
            lease: lease_pb2.Lease = event.lease
            return lease
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None
        raise
    finally:
        call.cancel()
    return None


def _service_section(
    conn: Connection, stub: lease_pb2_grpc.LeaseServiceStub | backend_pb2_grpc.BackendServiceStub
) -> dict[str, Any]:
    """What every service's section starts with: its socket, its health and what it says it is."""
    section: dict[str, Any] = {
        "socket": str(conn.endpoint.socket),
        "health": conn.health(),
        "service_health": conn.health(conn.endpoint.service),
    }
    describe = _call(lambda: stub.Describe(lease_pb2.DescribeRequest(), timeout=conn.timeout))
    section["describe"] = describe if isinstance(describe, dict) else message_dict(describe)
    return section


def lease_service_status(conn: Connection, lease_wait: float) -> dict[str, Any]:
    stub = conn.lease_stub()
    section = _service_section(conn, stub)
    lease = _call(lambda: own_lease(conn, lease_wait))
    section["own_lease"] = (
        lease if isinstance(lease, dict) else (lease_dict(lease) if lease is not None else None)
    )
    config = _call(lambda: stub.GetNetworkConfig(lease_pb2.GetNetworkConfigRequest(), timeout=conn.timeout))
    section["config"] = config if isinstance(config, dict) else message_dict(config.config)
    return section


def backend_status(conn: Connection) -> dict[str, Any]:
    stub = conn.backend_stub()
    section = _service_section(conn, stub)
    status = _call(lambda: stub.GetStatus(backend_pb2.GetStatusRequest(), timeout=conn.timeout))
    section["status"] = status if isinstance(status, dict) else status_dict(status)
    return section


def status_dict(status: backend_pb2.GetStatusResponse) -> dict[str, Any]:
    """GetStatus with stable keys: peers and rejections flattened, times as RFC 3339 or null."""
    last = None
    if status.HasField("last_reconcile"):
        last = status.last_reconcile.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return {
        "backend_type": status.backend_type,
        "device": status.device,
        "mtu": status.mtu,
        "ip_masq": status.ip_masq,
        "own_lease": lease_dict(status.own_lease) if status.HasField("own_lease") else None,
        "synced": status.synced,
        "applied_cursor": status.applied_cursor,
        "last_reconcile": last,
        "last_reconcile_outcome": status.last_reconcile_outcome,
        "peers": [{"mode": peer.mode, "lease": lease_dict(peer.lease)} for peer in status.peers],
        "rejected": [
            {"reason": r.reason, "message": r.message, "lease": lease_dict(r.lease)} for r in status.rejected
        ],
        "wireguard": wireguard_dict(status.wireguard) if status.HasField("wireguard") else None,
    }


def wireguard_dict(wg: backend_pb2.WireGuardStatus) -> dict[str, Any]:
    """The WireGuard devices and peers, handshakes as RFC 3339 or null (never one)."""

    def when(peer: backend_pb2.WireGuardPeer) -> str | None:
        if not peer.HasField("latest_handshake"):
            return None
        at: datetime = peer.latest_handshake.ToDatetime(tzinfo=UTC)
        return at.isoformat().replace("+00:00", "Z")

    return {
        "implementation": wg.implementation,
        "public_key": wg.public_key,
        "devices": list(wg.devices),
        "listen_port": wg.listen_port,
        "listen_port_v6": wg.listen_port_v6,
        "error": wg.error,
        "peers": [
            {
                "device": p.device,
                "public_key": p.public_key,
                "endpoint": p.endpoint,
                "allowed_ips": list(p.allowed_ips),
                "latest_handshake": when(p),
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
                "lease_key": p.lease_key,
            }
            for p in wg.peers
        ],
    }


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lease-wait",
        type=float,
        default=1.0,
        help="seconds to wait for this node's lease on WatchLease (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    with Connection(lease_endpoint(args.run_dir), args.timeout) as conn:
        lease = lease_service_status(conn, args.lease_wait)
    backend: dict[str, Any]
    unreachable: CtlError | None = None
    try:
        with Connection(backend_endpoint(args.run_dir), args.timeout) as conn:
            backend = backend_status(conn)
    except CtlError as exc:  # still show the lease service, then fail as a connection error
        unreachable = exc
        backend = {"socket": str(backend_endpoint(args.run_dir).socket), "error": str(exc)}
    healthy = lease["health"] == "SERVING" and backend.get("health") == "SERVING"
    if args.output == JSON:
        dump({"healthy": healthy, "lease_service": lease, "backend": backend})
    else:
        print_text(lease, backend)
    if unreachable is not None:
        raise unreachable
    return 0 if healthy else 1


def _describe_line(describe: dict[str, Any]) -> str:
    if "error" in describe:
        return str(describe["error"])
    return (
        f"{describe.get('name', '?')} {describe.get('version', '?')} "
        f"({', '.join(describe.get('api_versions', []))}; {', '.join(describe.get('capabilities', []))})"
    )


def _lease_line(lease: dict[str, Any] | None) -> str:
    if lease is None:
        return "none held yet"
    if "error" in lease:
        return str(lease["error"])
    expires = lease.get("expiration") or "never"
    subnets = " ".join(s for s in (lease.get("subnet"), lease.get("ipv6_subnet")) if s)
    return f"{lease['key']}  subnet {subnets}  public IP {lease.get('public_ip') or lease.get('public_ipv6')}  expires {expires}"


def _config_line(config: dict[str, Any]) -> str:
    if "error" in config:
        return str(config["error"])
    nets = []
    if config.get("enable_ipv4"):
        nets.append(
            f"{config['network']} (/{config['subnet_len']} from {config['subnet_min']} to {config['subnet_max']})"
        )
    if config.get("enable_ipv6"):
        nets.append(f"{config['ipv6_network']} (/{config['ipv6_subnet_len']})")
    return f"{', '.join(nets)}  backend {config.get('backend') or config.get('backend_type')}"


def _age(stamp: str | None) -> str:
    if not stamp:
        return "never"
    when = datetime.fromisoformat(stamp)
    return f"{stamp} ({(datetime.now(UTC) - when).total_seconds():.0f}s ago)"


def print_text(lease: dict[str, Any], backend: dict[str, Any], out: Any = sys.stdout) -> None:
    w = out.write
    w(f"lease service   {lease['socket']}\n")
    w(f"  health        {lease['health']} (service {lease['service_health']})\n")
    w(f"  describe      {_describe_line(lease['describe'])}\n")
    w(f"  own lease     {_lease_line(lease['own_lease'])}\n")
    w(f"  network       {_config_line(lease['config'])}\n")
    w(f"backend         {backend['socket']}\n")
    if "error" in backend:
        w(f"  error         {backend['error']}\n")
        return
    w(f"  health        {backend['health']} (service {backend['service_health']})\n")
    w(f"  describe      {_describe_line(backend['describe'])}\n")
    s = backend["status"]
    if "error" in s:
        w(f"  status        {s['error']}\n")
        return
    w(
        f"  dataplane     {s['backend_type'] or '-'}  device {s['device'] or '-'}  MTU {s['mtu']}  "
        f"ip-masq {'on' if s['ip_masq'] else 'off'}\n"
    )
    w(f"  synced        {'yes' if s['synced'] else 'no'}  applied cursor {s['applied_cursor'] or '-'}\n")
    w(f"  reconcile     {_age(s['last_reconcile'])}: {s['last_reconcile_outcome'] or '-'}\n")
    w(f"  peers         {len(s['peers'])}\n")
    for peer in s["peers"]:
        p = peer["lease"]
        w(
            f"    {p['key']}  {p['subnet'] or p['ipv6_subnet']}  {p['public_ip'] or p['public_ipv6']}  {peer['mode']}\n"
        )
    w(f"  rejected      {len(s['rejected'])}\n")
    for r in s["rejected"]:
        w(f"    {r['lease']['key']}  {r['reason']}: {r['message']}\n")
    wg = s.get("wireguard")
    if wg:
        w(
            f"  wireguard     {wg['implementation'] or '-'}  {', '.join(wg['devices'])}  public key {wg['public_key']}  "
            f"port {wg['listen_port']}\n"
        )
        if wg["error"]:
            w(f"    error       {wg['error']}\n")
        for p in wg["peers"]:
            handshake = _age(p["latest_handshake"]) if p["latest_handshake"] else "no handshake yet"
            w(
                f"    {p['lease_key'] or '(not ours)'}  {p['public_key']}  {p['endpoint'] or '-'}  "
                f"{','.join(p['allowed_ips'])}  {p['device']}  handshake {handshake}\n"
            )


COMMAND = Command(
    "status",
    help="both services: health, own lease, config, dataplane",
    description="The lease service (Describe, health, this node's lease, network config) and "
    "the backend (Describe, health, GetStatus: device, MTU, peers, rejected leases, "
    "last reconcile). Exit status 1 when either service is not SERVING.",
    run=run,
    arguments=_arguments,
)
