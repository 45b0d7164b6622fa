"""The socket names of the contract (no gRPC here: flanneld imports this without loading gRPC)."""

LEASE_SOCKET = "lease.sock"
"""The lease service's unix socket, in the run dir (``--run-dir``, default ``/run/flannel``)."""
BACKEND_SOCKET = "backend.sock"
"""The backend's unix socket, in the run dir."""
