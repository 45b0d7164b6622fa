"""Conversions between our typed values and the flannel.v1 wire messages, in one place."""

from __future__ import annotations

import json

from google.protobuf.timestamp_pb2 import Timestamp

from lease_service.extiface import ExternalInterface
from lease_service.lease import Lease
from lease_service.netconfig import NetworkConfig
from proto.flannel.v1 import lease_pb2


def lease_to_proto(lease: Lease) -> lease_pb2.Lease:
    msg = lease_pb2.Lease(
        key=lease.key,
        subnet=str(lease.subnet) if lease.subnet is not None else "",
        ipv6_subnet=str(lease.ipv6_subnet) if lease.ipv6_subnet is not None else "",
        public_ip=str(lease.attrs.public_ip) if lease.attrs.public_ip is not None else "",
        public_ipv6=str(lease.attrs.public_ipv6) if lease.attrs.public_ipv6 is not None else "",
        backend_type=lease.attrs.backend_type,
        backend_data=lease.attrs.backend_data,
        backend_v6_data=lease.attrs.backend_v6_data,
        node_name=lease.node_name,
    )
    if lease.expiration is not None:
        stamp = Timestamp()
        stamp.FromDatetime(lease.expiration)
        msg.expiration.CopyFrom(stamp)
    return msg


def _text(value: object) -> str:
    return "" if value is None else str(value)


def config_to_proto(config: NetworkConfig) -> lease_pb2.NetworkConfig:
    return lease_pb2.NetworkConfig(
        enable_ipv4=config.enable_ipv4,
        enable_ipv6=config.enable_ipv6,
        network=_text(config.network),
        subnet_len=config.subnet_len,
        subnet_min=_text(config.subnet_min),
        subnet_max=_text(config.subnet_max),
        ipv6_network=_text(config.ipv6_network),
        ipv6_subnet_len=config.ipv6_subnet_len,
        ipv6_subnet_min=_text(config.ipv6_subnet_min),
        ipv6_subnet_max=_text(config.ipv6_subnet_max),
        backend_type=config.backend_type,
        backend=json.dumps(config.backend, separators=(",", ":"), sort_keys=True),
        raw=config.raw,
    )


def external_interface_to_proto(ext: ExternalInterface) -> lease_pb2.ExternalInterface:
    return lease_pb2.ExternalInterface(
        name=ext.name,
        index=ext.index,
        mtu=ext.mtu,
        iface_ipv4=_text(ext.iface_ipv4),
        iface_ipv6=_text(ext.iface_ipv6),
        public_ip=_text(ext.public_ip),
        public_ipv6=_text(ext.public_ipv6),
    )
