"""What the backend tells operators: the status ``GetStatus`` serves, and gRPC health derived from it.

Health is SERVING only when the dataplane is right: the lease stream is synced, the last
reconcile applied every op, and the backend's devices are present. Anything else, and any
unexpected failure of the controller, is NOT_SERVING.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from proto.flannel.v1 import backend_pb2, lease_pb2


@dataclass
class Status:
    """Mutable status, updated by the controller's tasks, read by GetStatus and health."""

    backend_type: str = ""
    device: str = ""
    mtu: int = 0
    ip_masq: bool = False
    own_lease: lease_pb2.Lease | None = None
    peers: dict[str, str] = field(default_factory=dict)  # lease key -> how it is reached (Peer.mode)
    leases: Callable[[], Mapping[str, bytes]] = dict
    """The leases as the stream last said, serialized (:func:`~backend_service.leases.held_message`); peers
    are built from them when asked, not copied."""
    rejected: dict[str, lease_pb2.RejectedLease] = field(default_factory=dict)  # by lease key
    last_reconcile: datetime | None = None
    last_outcome: str = ""
    applied_cursor: str = ""
    synced: bool = False
    own_lease_conflict: str = ""
    """The last change another writer made to our lease (from WatchLease CONFLICT)."""
    last_ok: bool = False
    """The last reconcile (full or delta) applied every op."""
    device_present: bool = False
    """Every device the backend owns existed at the last read of the kernel."""
    failed: str = ""
    """Why the controller stopped (an unexpected failure); health stays NOT_SERVING."""
    wireguard: Callable[[], Awaitable[backend_pb2.WireGuardStatus]] | None = None
    """The wireguard backend's devices and peers, read when GetStatus asks (None for other backends)."""

    @property
    def healthy(self) -> bool:
        """SERVING: synced, last reconcile ok, devices present, and nothing failed."""
        return self.synced and self.last_ok and self.device_present and not self.failed


class Health:
    """Publishes ``status.healthy`` through ``set_serving`` (gRPC health) whenever it changes."""

    def __init__(self, status: Status, set_serving: Callable[[bool], Awaitable[None]]) -> None:
        self.status = status
        self._set_serving = set_serving
        self._published: bool | None = None

    async def update(self) -> None:
        serving = self.status.healthy
        if serving != self._published:
            self._published = serving
            await self._set_serving(serving)

    async def fail(self, reason: str) -> None:
        """The controller stopped unexpectedly: NOT_SERVING for good."""
        self.status.failed = reason or "failed"
        await self.update()
