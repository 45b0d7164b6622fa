import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from proto.flannel.v1 import lease_pb2 as _lease_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Peer(_message.Message):
    __slots__ = ("lease", "mode")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    lease: _lease_pb2.Lease
    mode: str
    def __init__(self, lease: _Optional[_Union[_lease_pb2.Lease, _Mapping]] = ..., mode: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("backend_type", "device", "mtu", "own_lease", "peers", "rejected", "last_reconcile", "last_reconcile_outcome", "applied_cursor", "synced", "ip_masq", "wireguard", "own_lease_conflict")
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    OWN_LEASE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_RECONCILE_FIELD_NUMBER: _ClassVar[int]
    LAST_RECONCILE_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_CURSOR_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    IP_MASQ_FIELD_NUMBER: _ClassVar[int]
    WIREGUARD_FIELD_NUMBER: _ClassVar[int]
    OWN_LEASE_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    backend_type: str
    device: str
    mtu: int
    own_lease: _lease_pb2.Lease
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    rejected: _containers.RepeatedCompositeFieldContainer[_lease_pb2.RejectedLease]
    last_reconcile: _timestamp_pb2.Timestamp
    last_reconcile_outcome: str
    applied_cursor: str
    synced: bool
    ip_masq: bool
    wireguard: WireGuardStatus
    own_lease_conflict: str
    def __init__(self, backend_type: _Optional[str] = ..., device: _Optional[str] = ..., mtu: _Optional[int] = ..., own_lease: _Optional[_Union[_lease_pb2.Lease, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., rejected: _Optional[_Iterable[_Union[_lease_pb2.RejectedLease, _Mapping]]] = ..., last_reconcile: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_reconcile_outcome: _Optional[str] = ..., applied_cursor: _Optional[str] = ..., synced: _Optional[bool] = ..., ip_masq: _Optional[bool] = ..., wireguard: _Optional[_Union[WireGuardStatus, _Mapping]] = ..., own_lease_conflict: _Optional[str] = ...) -> None: ...

class WireGuardPeer(_message.Message):
    __slots__ = ("device", "public_key", "endpoint", "allowed_ips", "latest_handshake", "rx_bytes", "tx_bytes", "lease_key")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IPS_FIELD_NUMBER: _ClassVar[int]
    LATEST_HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    LEASE_KEY_FIELD_NUMBER: _ClassVar[int]
    device: str
    public_key: str
    endpoint: str
    allowed_ips: _containers.RepeatedScalarFieldContainer[str]
    latest_handshake: _timestamp_pb2.Timestamp
    rx_bytes: int
    tx_bytes: int
    lease_key: str
    def __init__(self, device: _Optional[str] = ..., public_key: _Optional[str] = ..., endpoint: _Optional[str] = ..., allowed_ips: _Optional[_Iterable[str]] = ..., latest_handshake: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rx_bytes: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., lease_key: _Optional[str] = ...) -> None: ...

class WireGuardStatus(_message.Message):
    __slots__ = ("implementation", "public_key", "devices", "listen_port", "listen_port_v6", "peers", "error")
    IMPLEMENTATION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LISTEN_PORT_FIELD_NUMBER: _ClassVar[int]
    LISTEN_PORT_V6_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    implementation: str
    public_key: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    listen_port: int
    listen_port_v6: int
    peers: _containers.RepeatedCompositeFieldContainer[WireGuardPeer]
    error: str
    def __init__(self, implementation: _Optional[str] = ..., public_key: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., listen_port: _Optional[int] = ..., listen_port_v6: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[WireGuardPeer, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...
