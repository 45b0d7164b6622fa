"""Subnet managers: where leases live (etcd v3, Kubernetes Node objects), behind one protocol."""

from lease_service.subnet.base import (
    AccessDenied,
    AcquireError,
    Change,
    LeaseSink,
    StateUnavailable,
    StoreUnavailable,
    SubnetManager,
)

__all__ = [
    "AccessDenied",
    "AcquireError",
    "Change",
    "LeaseSink",
    "StateUnavailable",
    "StoreUnavailable",
    "SubnetManager",
]
