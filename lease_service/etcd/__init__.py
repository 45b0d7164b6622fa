"""A thin asyncio etcd v3 client (grpc.aio on our own stubs): KV, leases, resumable prefix watches.

Only this package imports the generated etcd stubs (``lease_service.etcd.proto``). The names below are
imported on first use, so that the command line (``EtcdSettings``) is parsed before gRPC and asyncio load
(the lease service decides then whether Python's ssl module is needed at all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flannel_rpc.lazy import lazy_names

if TYPE_CHECKING:
    from lease_service.etcd.client import EtcdClient, KeyValue, WatchBatch, WatchEvent
    from lease_service.etcd.errors import EtcdError, EtcdUnavailable, WatchCompacted
    from lease_service.etcd.settings import EtcdSettings

_HOMES = {
    "EtcdClient": "lease_service.etcd.client",
    "KeyValue": "lease_service.etcd.client",
    "WatchBatch": "lease_service.etcd.client",
    "WatchEvent": "lease_service.etcd.client",
    "EtcdError": "lease_service.etcd.errors",
    "EtcdUnavailable": "lease_service.etcd.errors",
    "WatchCompacted": "lease_service.etcd.errors",
    "EtcdSettings": "lease_service.etcd.settings",
}

__all__ = [
    "EtcdClient",
    "EtcdError",
    "EtcdSettings",
    "EtcdUnavailable",
    "KeyValue",
    "WatchBatch",
    "WatchCompacted",
    "WatchEvent",
]


__getattr__ = lazy_names(__name__, _HOMES)
