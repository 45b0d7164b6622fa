"""What both daemons share to speak the contract: a gRPC server on a unix socket with health
checking and reflection, and a client channel to one."""

from flannel_rpc.logs import configure_logging
from flannel_rpc.serve import UnixServer, unix_target

__all__ = ["UnixServer", "configure_logging", "unix_target"]
