"""``flannelctl leases``: every lease, from one WatchLeases snapshot (read until SYNCED, then closed)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import grpc

from flannelctl.command import Command
from flannelctl.connect import Connection, CtlError, answering, lease_endpoint, rpc_error_text
from flannelctl.output import JSON, LEASE_HEADER, dump, lease_dict, lease_row, table
from proto.flannel.v1 import lease_pb2

Msg = lease_pb2.WatchLeasesResponse


@dataclass(frozen=True)
class Snapshot:
    """Every lease the lease service holds, and the cursor to resume after them."""

    leases: tuple[lease_pb2.Lease, ...]
    cursor: str


def read_snapshot(conn: Connection) -> Snapshot:
    """Read a fresh snapshot up to SYNCED, then cancel the stream."""
    call = conn.lease_stub().WatchLeases(lease_pb2.WatchLeasesRequest(), timeout=conn.timeout)
    leases: dict[str, lease_pb2.Lease] = {}
    try:
        for msg in call:
            if msg.reset:
                leases.clear()
            if msg.kind in (Msg.SNAPSHOT, Msg.DELTA):
                for event in msg.events:
                    if event.type == lease_pb2.LeaseEvent.REMOVE:
                        leases.pop(event.lease.key, None)
                    else:
                        leases[event.lease.key] = event.lease
            elif msg.kind == Msg.SYNCED:
                return Snapshot(tuple(sorted(leases.values(), key=_order)), msg.cursor)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE and not leases:
            raise CtlError(
                f"the lease service at {conn.endpoint.socket} answered WatchLeases with {rpc_error_text(exc)}"
            ) from None
        raise CtlError(
            f"WatchLeases on {conn.endpoint.socket} failed before SYNCED: {rpc_error_text(exc)}"
        ) from None
    finally:
        call.cancel()
    raise CtlError(f"the lease service at {conn.endpoint.socket} closed WatchLeases before SYNCED")


def _order(lease: lease_pb2.Lease) -> tuple[int, object, str]:
    """Leases sorted by subnet address, then by key (a subnet sorts numerically, not as text)."""
    import ipaddress

    for text in (lease.subnet, lease.ipv6_subnet):
        if text:
            try:
                net = ipaddress.ip_network(text, strict=False)
                return (net.version, int(net.network_address), lease.key)
            except ValueError:
                pass
    return (9, 0, lease.key)


def run(args: argparse.Namespace) -> int:
    with answering(lease_endpoint(args.run_dir), args.timeout) as conn:
        snapshot = read_snapshot(conn)
    if args.output == JSON:
        dump({"cursor": snapshot.cursor, "leases": [lease_dict(lease) for lease in snapshot.leases]})
    else:
        table(LEASE_HEADER, [lease_row(lease) for lease in snapshot.leases])
        print(f"{len(snapshot.leases)} leases; cursor {snapshot.cursor}", file=sys.stderr)
    return 0


COMMAND = Command(
    "leases",
    help="every lease in the cluster, as the lease service sees it",
    description="A table of every lease from one WatchLeases snapshot (read until SYNCED).",
    run=run,
)
