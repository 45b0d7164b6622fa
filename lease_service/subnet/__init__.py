"""Subnet managers: where leases live (etcd v3, Kubernetes Node objects), behind the protocol of
``lease_service.subnet.base``."""
