"""Prometheus metrics of the backend, served only with ``--metrics-listen HOST:PORT`` (:mod:`flannel_rpc.metrics`).

Plain numbers (:mod:`flannel_rpc.metrics`): prometheus_client is imported only when they are served.
"""

from __future__ import annotations

from flannel_rpc.metrics import Counter, Gauge, Histogram

PEERS = Gauge("flannel_backend_peers", "Peers programmed into the kernel by the last successful reconcile.")
REJECTED_LEASES = Gauge(
    "flannel_backend_rejected_leases", "Leases the last reconcile rejected (see GetStatus for the reasons)."
)
KERNEL_OPS = Counter(
    "flannel_backend_kernel_ops_applied",
    "Kernel objects programmed: routes, neighbours, FDB entries added, replaced or deleted.",
)
DEVICE_REPAIRS = Counter(
    "flannel_backend_device_repairs",
    "Times a device of ours was found deleted or changed (by netlink events) and restored.",
)
KERNEL_OP_FAILURES = Counter("flannel_backend_kernel_op_failures", "Kernel operations the kernel refused.")
RECONCILE_SECONDS = Histogram(
    "flannel_backend_reconcile_duration_seconds",
    "Time of one reconcile: read the kernel, diff, apply.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LEASE_SERVICE_RECONNECTS = Counter(
    "flannel_backend_lease_service_reconnects",
    "Times the connection to the lease service was lost and resumed from the cursor.",
)
