"""Prometheus metrics of the lease service, served only with ``--metrics-listen HOST:PORT`` (:mod:`flannel_rpc.metrics`).

Plain numbers (:class:`flannel_rpc.metrics.Counter` and ``Gauge``): prometheus_client is imported only when
they are served; updating them costs an addition.
"""

from __future__ import annotations

from flannel_rpc.metrics import Counter, Gauge

LEASES = Gauge(
    "flannel_lease_service_leases",
    "Valid leases the lease service currently knows (what a fresh WatchLeases snapshot holds).",
)
EVENTS_STREAMED = Counter(
    "flannel_lease_service_events_streamed",
    "Lease events sent to WatchLeases watchers, snapshots included, summed over watchers.",
)
WATCHERS = Gauge("flannel_lease_service_watchers", "WatchLeases streams currently connected.")
STORE_RELISTS = Counter(
    "flannel_lease_service_store_relists",
    "Times the store was listed again after the first list (etcd compaction, Kubernetes 410, a lost store).",
)
STORE_RECONNECTS = Counter(
    "flannel_lease_service_store_reconnects",
    "Times the lease watch on the store failed and was started again.",
)
CORRUPT_LEASES = Counter(
    "flannel_lease_service_corrupt_leases",
    "Leases skipped because their value, key or node annotations were invalid (each version counted once).",
)
