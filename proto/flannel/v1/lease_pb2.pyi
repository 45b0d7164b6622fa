import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("name", "version", "api_versions", "capabilities")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    api_versions: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., api_versions: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("subnet", "ipv6_subnet", "public_ip", "public_ipv6", "backend_type", "backend_data", "backend_v6_data", "expiration", "key", "node_name")
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    IPV6_SUBNET_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_IP_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_IPV6_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_DATA_FIELD_NUMBER: _ClassVar[int]
    BACKEND_V6_DATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    subnet: str
    ipv6_subnet: str
    public_ip: str
    public_ipv6: str
    backend_type: str
    backend_data: str
    backend_v6_data: str
    expiration: _timestamp_pb2.Timestamp
    key: str
    node_name: str
    def __init__(self, subnet: _Optional[str] = ..., ipv6_subnet: _Optional[str] = ..., public_ip: _Optional[str] = ..., public_ipv6: _Optional[str] = ..., backend_type: _Optional[str] = ..., backend_data: _Optional[str] = ..., backend_v6_data: _Optional[str] = ..., expiration: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key: _Optional[str] = ..., node_name: _Optional[str] = ...) -> None: ...

class NetworkConfig(_message.Message):
    __slots__ = ("enable_ipv4", "enable_ipv6", "network", "subnet_len", "subnet_min", "subnet_max", "ipv6_network", "ipv6_subnet_len", "ipv6_subnet_min", "ipv6_subnet_max", "backend_type", "backend", "raw")
    ENABLE_IPV4_FIELD_NUMBER: _ClassVar[int]
    ENABLE_IPV6_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SUBNET_LEN_FIELD_NUMBER: _ClassVar[int]
    SUBNET_MIN_FIELD_NUMBER: _ClassVar[int]
    SUBNET_MAX_FIELD_NUMBER: _ClassVar[int]
    IPV6_NETWORK_FIELD_NUMBER: _ClassVar[int]
    IPV6_SUBNET_LEN_FIELD_NUMBER: _ClassVar[int]
    IPV6_SUBNET_MIN_FIELD_NUMBER: _ClassVar[int]
    IPV6_SUBNET_MAX_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    enable_ipv4: bool
    enable_ipv6: bool
    network: str
    subnet_len: int
    subnet_min: str
    subnet_max: str
    ipv6_network: str
    ipv6_subnet_len: int
    ipv6_subnet_min: str
    ipv6_subnet_max: str
    backend_type: str
    backend: str
    raw: str
    def __init__(self, enable_ipv4: _Optional[bool] = ..., enable_ipv6: _Optional[bool] = ..., network: _Optional[str] = ..., subnet_len: _Optional[int] = ..., subnet_min: _Optional[str] = ..., subnet_max: _Optional[str] = ..., ipv6_network: _Optional[str] = ..., ipv6_subnet_len: _Optional[int] = ..., ipv6_subnet_min: _Optional[str] = ..., ipv6_subnet_max: _Optional[str] = ..., backend_type: _Optional[str] = ..., backend: _Optional[str] = ..., raw: _Optional[str] = ...) -> None: ...

class GetNetworkConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExternalInterface(_message.Message):
    __slots__ = ("name", "index", "mtu", "iface_ipv4", "iface_ipv6", "public_ip", "public_ipv6")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    IFACE_IPV4_FIELD_NUMBER: _ClassVar[int]
    IFACE_IPV6_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_IP_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_IPV6_FIELD_NUMBER: _ClassVar[int]
    name: str
    index: int
    mtu: int
    iface_ipv4: str
    iface_ipv6: str
    public_ip: str
    public_ipv6: str
    def __init__(self, name: _Optional[str] = ..., index: _Optional[int] = ..., mtu: _Optional[int] = ..., iface_ipv4: _Optional[str] = ..., iface_ipv6: _Optional[str] = ..., public_ip: _Optional[str] = ..., public_ipv6: _Optional[str] = ...) -> None: ...

class GetNetworkConfigResponse(_message.Message):
    __slots__ = ("config", "external_interface")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_INTERFACE_FIELD_NUMBER: _ClassVar[int]
    config: NetworkConfig
    external_interface: ExternalInterface
    def __init__(self, config: _Optional[_Union[NetworkConfig, _Mapping]] = ..., external_interface: _Optional[_Union[ExternalInterface, _Mapping]] = ...) -> None: ...

class AcquireLeaseRequest(_message.Message):
    __slots__ = ("backend_type", "backend_data", "backend_v6_data", "mtu")
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_DATA_FIELD_NUMBER: _ClassVar[int]
    BACKEND_V6_DATA_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    backend_type: str
    backend_data: str
    backend_v6_data: str
    mtu: int
    def __init__(self, backend_type: _Optional[str] = ..., backend_data: _Optional[str] = ..., backend_v6_data: _Optional[str] = ..., mtu: _Optional[int] = ...) -> None: ...

class AcquireLeaseResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class WatchLeasesRequest(_message.Message):
    __slots__ = ("cursor", "max_batch")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    max_batch: int
    def __init__(self, cursor: _Optional[str] = ..., max_batch: _Optional[int] = ...) -> None: ...

class LeaseEvent(_message.Message):
    __slots__ = ("type", "lease")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[LeaseEvent.Type]
        UPSERT: _ClassVar[LeaseEvent.Type]
        REMOVE: _ClassVar[LeaseEvent.Type]
    TYPE_UNSPECIFIED: LeaseEvent.Type
    UPSERT: LeaseEvent.Type
    REMOVE: LeaseEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    type: LeaseEvent.Type
    lease: Lease
    def __init__(self, type: _Optional[_Union[LeaseEvent.Type, str]] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class WatchLeasesResponse(_message.Message):
    __slots__ = ("kind", "events", "cursor", "reset", "reason")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[WatchLeasesResponse.Kind]
        SNAPSHOT: _ClassVar[WatchLeasesResponse.Kind]
        SYNCED: _ClassVar[WatchLeasesResponse.Kind]
        DELTA: _ClassVar[WatchLeasesResponse.Kind]
        PROGRESS: _ClassVar[WatchLeasesResponse.Kind]
    KIND_UNSPECIFIED: WatchLeasesResponse.Kind
    SNAPSHOT: WatchLeasesResponse.Kind
    SYNCED: WatchLeasesResponse.Kind
    DELTA: WatchLeasesResponse.Kind
    PROGRESS: WatchLeasesResponse.Kind
    class ResyncReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        RESYNC_REASON_UNSPECIFIED: _ClassVar[WatchLeasesResponse.ResyncReason]
        INITIAL: _ClassVar[WatchLeasesResponse.ResyncReason]
        CURSOR_COMPACTED: _ClassVar[WatchLeasesResponse.ResyncReason]
        CURSOR_INVALID: _ClassVar[WatchLeasesResponse.ResyncReason]
        FELL_BEHIND: _ClassVar[WatchLeasesResponse.ResyncReason]
        STORE_RESYNC: _ClassVar[WatchLeasesResponse.ResyncReason]
    RESYNC_REASON_UNSPECIFIED: WatchLeasesResponse.ResyncReason
    INITIAL: WatchLeasesResponse.ResyncReason
    CURSOR_COMPACTED: WatchLeasesResponse.ResyncReason
    CURSOR_INVALID: WatchLeasesResponse.ResyncReason
    FELL_BEHIND: WatchLeasesResponse.ResyncReason
    STORE_RESYNC: WatchLeasesResponse.ResyncReason
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: WatchLeasesResponse.Kind
    events: _containers.RepeatedCompositeFieldContainer[LeaseEvent]
    cursor: str
    reset: bool
    reason: WatchLeasesResponse.ResyncReason
    def __init__(self, kind: _Optional[_Union[WatchLeasesResponse.Kind, str]] = ..., events: _Optional[_Iterable[_Union[LeaseEvent, _Mapping]]] = ..., cursor: _Optional[str] = ..., reset: _Optional[bool] = ..., reason: _Optional[_Union[WatchLeasesResponse.ResyncReason, str]] = ...) -> None: ...

class WatchLeaseRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchLeaseResponse(_message.Message):
    __slots__ = ("kind", "lease", "conflict")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[WatchLeaseResponse.Kind]
        CURRENT: _ClassVar[WatchLeaseResponse.Kind]
        RENEWED: _ClassVar[WatchLeaseResponse.Kind]
        LOST: _ClassVar[WatchLeaseResponse.Kind]
        REACQUIRED: _ClassVar[WatchLeaseResponse.Kind]
        CONFLICT: _ClassVar[WatchLeaseResponse.Kind]
    KIND_UNSPECIFIED: WatchLeaseResponse.Kind
    CURRENT: WatchLeaseResponse.Kind
    RENEWED: WatchLeaseResponse.Kind
    LOST: WatchLeaseResponse.Kind
    REACQUIRED: WatchLeaseResponse.Kind
    CONFLICT: WatchLeaseResponse.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    kind: WatchLeaseResponse.Kind
    lease: Lease
    conflict: str
    def __init__(self, kind: _Optional[_Union[WatchLeaseResponse.Kind, str]] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., conflict: _Optional[str] = ...) -> None: ...

class RejectedLease(_message.Message):
    __slots__ = ("lease", "reason", "message")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    reason: str
    message: str
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReportBackendStatusRequest(_message.Message):
    __slots__ = ("applied_cursor", "rejected")
    APPLIED_CURSOR_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    applied_cursor: str
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedLease]
    def __init__(self, applied_cursor: _Optional[str] = ..., rejected: _Optional[_Iterable[_Union[RejectedLease, _Mapping]]] = ...) -> None: ...

class ReportBackendStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
