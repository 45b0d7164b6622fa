"""What both daemons share to speak the contract: a gRPC server on a unix socket with health
checking and reflection, and a client channel to one.

The names below are imported on first use, so that importing a gRPC-free part (``flannel_rpc.exitcodes``,
``flannel_rpc.sockets``, ``flannel_rpc.logs``: what flanneld needs) does not load the gRPC library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flannel_rpc.lazy import lazy_names

if TYPE_CHECKING:
    from flannel_rpc.logs import configure_logging
    from flannel_rpc.serve import (
        MAX_MESSAGE_BYTES,
        MESSAGE_LIMITS,
        STREAM_BATCH_BYTES,
        UnixServer,
        unix_target,
    )
    from flannel_rpc.sockets import BACKEND_SOCKET, LEASE_SOCKET

_HOMES = {
    "BACKEND_SOCKET": "flannel_rpc.sockets",
    "LEASE_SOCKET": "flannel_rpc.sockets",
    "MAX_MESSAGE_BYTES": "flannel_rpc.serve",
    "MESSAGE_LIMITS": "flannel_rpc.serve",
    "STREAM_BATCH_BYTES": "flannel_rpc.serve",
    "UnixServer": "flannel_rpc.serve",
    "unix_target": "flannel_rpc.serve",
    "configure_logging": "flannel_rpc.logs",
}

__all__ = [
    "BACKEND_SOCKET",
    "LEASE_SOCKET",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_LIMITS",
    "STREAM_BATCH_BYTES",
    "UnixServer",
    "configure_logging",
    "unix_target",
]


__getattr__ = lazy_names(__name__, _HOMES)
