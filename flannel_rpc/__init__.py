"""What both daemons share to speak the contract: a gRPC server on a unix socket with health
checking and reflection, and a client channel to one."""

from flannel_rpc.logs import configure_logging
from flannel_rpc.serve import (
    BACKEND_SOCKET,
    LEASE_SOCKET,
    MAX_MESSAGE_BYTES,
    MESSAGE_LIMITS,
    STREAM_BATCH_BYTES,
    UnixServer,
    unix_target,
)

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
