"""A thin asyncio etcd v3 client (grpc.aio on our own stubs): KV, leases, resumable prefix watches.

Only this package imports the generated etcd stubs (``lease_service.etcd.proto``).
"""

from lease_service.etcd.client import EtcdClient, KeyValue, WatchBatch, WatchEvent
from lease_service.etcd.errors import EtcdError, EtcdUnavailable, WatchCompacted
from lease_service.etcd.settings import EtcdSettings

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
