"""A WatchLeases stream from a lease service's socket, read in a background thread."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from proto.flannel.v1 import lease_pb2, lease_pb2_grpc

Msg = lease_pb2.WatchLeasesResponse


class Stream:
    """Every message of one WatchLeases call, as it arrives."""

    def __init__(self, socket: Path, cursor: str = "") -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        stub = lease_pb2_grpc.LeaseServiceStub(self.channel)
        self.call = stub.WatchLeases(lease_pb2.WatchLeasesRequest(cursor=cursor))
        self.msgs: list[Msg] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for msg in self.call:
                self.msgs.append(msg)
        except grpc.RpcError as exc:
            self.error = exc

    def events(self) -> list[tuple[int, str]]:
        """(type, key) of every delta event so far."""
        return [(e.type, e.lease.key) for m in list(self.msgs) if m.kind == Msg.DELTA for e in m.events]

    def snapshot_keys(self) -> set[str]:
        return {e.lease.key for m in list(self.msgs) if m.kind == Msg.SNAPSHOT for e in m.events}

    def synced(self) -> bool:
        return any(m.kind == Msg.SYNCED for m in list(self.msgs))

    def last_cursor(self) -> str:
        return next(m.cursor for m in reversed(self.msgs) if m.cursor)

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)
        self.channel.close()
