"""``flannelctl watch``: the lease stream live, one line per event, per SYNCED marker, and per PROGRESS
marker whose cursor moved (every PROGRESS with ``-v``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc

from flannelctl.command import Command
from flannelctl.connect import CtlError, answering, lease_endpoint, rpc_error_text
from flannelctl.output import JSON, dump, lease_dict, now
from proto.flannel.v1 import lease_pb2

Msg = lease_pb2.WatchLeasesResponse
Event = lease_pb2.LeaseEvent


def records(msg: lease_pb2.WatchLeasesResponse) -> Iterator[dict[str, Any]]:
    """One record per lease event of ``msg``, or one for a marker (SYNCED, PROGRESS, an empty snapshot).

    ``kind`` is SNAPSHOT for a snapshot's leases, UPSERT / REMOVE for deltas, SYNCED, PROGRESS."""
    stamp = now()
    kind = Msg.Kind.Name(msg.kind)
    extra: dict[str, Any] = {}
    if msg.kind == Msg.SNAPSHOT:
        extra = {"reset": msg.reset, "reason": Msg.ResyncReason.Name(msg.reason)}
    if msg.cursor:
        extra["cursor"] = msg.cursor
    for index, event in enumerate(msg.events):
        lease = event.lease
        if index == 1 and "reset" in extra:
            extra = {**extra, "reset": False}  # the reset applies once, before the first lease
        event_kind = "SNAPSHOT" if msg.kind == Msg.SNAPSHOT else Event.Type.Name(event.type)
        yield {
            "time": stamp,
            "kind": event_kind,
            "key": lease.key,
            "subnet": lease.subnet,
            "ipv6_subnet": lease.ipv6_subnet,
            "public_ip": lease.public_ip or lease.public_ipv6,
            "lease": lease_dict(lease),
            **extra,
        }
    if not msg.events:
        yield {"time": stamp, "kind": kind, **extra}


def text_line(record: dict[str, Any]) -> str:
    """``time kind key subnet public-ip`` for an event; ``time kind cursor=...`` for a marker."""
    if "key" in record:
        subnet = record["subnet"] or record["ipv6_subnet"] or "-"
        line = f"{record['time']} {record['kind']:<8} {record['key']} {subnet} {record['public_ip'] or '-'}"
        if record.get("reset"):
            line += f" (new snapshot: {record['reason']})"
        return line
    if record["kind"] == "SNAPSHOT":
        return f"{record['time']} SNAPSHOT (empty; {record['reason']})"
    return f"{record['time']} {record['kind']:<8} cursor={record.get('cursor', '')}"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cursor", default="", help="resume after this cursor (default: a fresh snapshot first)")
    p.add_argument("--count", type=int, default=0, help="stop after this many lease events (default: never)")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every PROGRESS marker (default: only those whose cursor moved)",
    )


def worth_printing(record: dict[str, Any], last_cursor: str, verbose: bool) -> bool:
    """Every event and marker, except a PROGRESS that says nothing new (same cursor) unless ``verbose``:
    an idle stream would otherwise print the same line every 10 s forever."""
    return verbose or record["kind"] != "PROGRESS" or record.get("cursor", "") != last_cursor


def run(args: argparse.Namespace) -> int:
    if args.count < 0:
        raise CtlError(f"--count {args.count} must be >= 0")
    seen = 0
    cursor = args.cursor
    printed_cursor = cursor
    with answering(lease_endpoint(args.run_dir), args.timeout) as conn:
        while True:
            call = conn.lease_stub().WatchLeases(
                lease_pb2.WatchLeasesRequest(cursor=cursor), wait_for_ready=True
            )
            try:
                for msg in call:
                    cursor = msg.cursor or cursor
                    for record in records(msg):
                        if not worth_printing(record, printed_cursor, args.verbose):
                            continue
                        printed_cursor = record.get("cursor", printed_cursor)
                        if args.output == JSON:
                            dump(record, lines=True)
                        else:
                            print(text_line(record), flush=True)
                        if "key" in record:
                            seen += 1
                            if args.count and seen >= args.count:
                                return 0
                why = "the lease service closed the stream"
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    return 0
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise CtlError(
                        f"WatchLeases on {conn.endpoint.socket} ended: {rpc_error_text(exc)}"
                    ) from None
                why = rpc_error_text(exc)
            finally:
                call.cancel()
            # The lease service restarted (or is restarting): resume after the last cursor, as a backend does.
            print(
                f"flannelctl: the lease stream on {conn.endpoint.socket} broke ({why}); resuming from "
                f"{'cursor ' + cursor if cursor else 'a fresh snapshot'}",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(0.5)


COMMAND = Command(
    "watch",
    help="follow the lease stream live",
    description="Follow WatchLeases: one line per lease event (time, kind, key, subnet, public "
    "IP) and per SYNCED/PROGRESS marker with its cursor. With -o json, one JSON "
    "object per line. Pass a cursor from an earlier run to resume after it.",
    run=run,
    arguments=_arguments,
)
