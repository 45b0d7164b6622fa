"""Subnet managers: where leases live (etcd v3, Kubernetes Node objects), behind one protocol."""

from lease_service.subnet.base import AcquireError, SubnetManager, StoreUnavailable

__all__ = ["AcquireError", "SubnetManager", "StoreUnavailable"]
