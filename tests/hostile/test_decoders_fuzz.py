"""Property-based fuzzers for every decoder of untrusted input: whatever the input, a decode yields a
valid typed value or a named rejection (a reason code), within a time and memory bound."""

from __future__ import annotations

import base64
import functools
import itertools
import json
import time
import tracemalloc
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_service.leases import LeaseError, PeerLease, parse_lease
from backend_service.validate import REASONS as BACKEND_REASONS
from flannel_rpc.serve import _tolerant, _Undecodable
from flannel_rpc.untrusted import ANNOTATION, LEASE_VALUE, REASONS, Rejected, decode_json
from lease_service.lease import CorruptLease, Lease, LeaseAttrs, decode_lease, parse_subnet_key
from lease_service.netconfig import ConfigError, NetworkConfig, parse_network_config
from lease_service.stream import LeaseHub
from proto.flannel.v1 import lease_pb2

T = TypeVar("T")
SECONDS = 10.0  # one decode, on a loaded 2-core machine shared by many test runs
PEAK_BYTES = 64 * 1024 * 1024
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Shapes that broke decoders before: deep nesting, long integers, long strings, odd digits and endings.
hostile_bytes = st.one_of(
    st.binary(max_size=512),
    st.integers(1, 120_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 60_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 6_000).map(lambda n: b"9" * n),
    st.integers(1, 6_000).map(lambda n: b'{"PublicIP":"1.2.3.4","BackendData":' + b"1" * n + b"}"),
    st.sampled_from([b"NaN", b"-Infinity", b"1e999", b'"\\ud800"', b"\xff\xfe", b"[1,", b"{}", b"null"]),
    st.integers(0, 2 * 1024 * 1024).map(lambda n: b'"' + b"a" * n + b'"'),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
lease_docs = st.fixed_dictionaries(
    {},
    optional={
        "PublicIP": st.one_of(
            st.text(max_size=20), st.sampled_from(["10.0.0.1", "255.255.255.255", "1" * 5000]), json_values
        ),
        "PublicIPv6": st.one_of(st.text(max_size=20), st.just("fc00::1"), json_values),
        "BackendType": st.one_of(st.sampled_from(["vxlan", "host-gw", ""]), json_values),
        "BackendData": json_values,
    },
)


def bounded(call: Callable[[], T]) -> T:
    """``call()``, asserting it took under SECONDS and peaked under PEAK_BYTES of new memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        return call()
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert elapsed < SECONDS, f"decode took {elapsed:.2f}s"
        assert peak < PEAK_BYTES, f"decode peaked at {peak} bytes"


def outcome(call: Callable[[], Any], *rejections: type[Exception]) -> Any:
    """The value, or the rejection (an instance of one of ``rejections``); anything else fails the test."""
    try:
        return bounded(call)
    except rejections as exc:
        return exc


@FUZZ
@given(hostile_bytes)
def test_the_json_decoder_yields_a_value_or_a_named_rejection(data: bytes) -> None:
    result = outcome(lambda: decode_json(data, LEASE_VALUE, "doc"), Rejected)
    if isinstance(result, Rejected):
        assert result.reason in REASONS and result.message


@FUZZ
@given(json_values)
def test_valid_json_within_the_bounds_is_decoded_as_json(value: Any) -> None:
    text = json.dumps(value)
    assert decode_json(text, ANNOTATION, "doc") == json.loads(text)


@FUZZ
@given(
    st.one_of(hostile_bytes, lease_docs.map(lambda d: json.dumps(d).encode())),
    st.sampled_from(["10.244.3.0-24", "10.244.3.0-24&fc00:0:0:3::-64"]),
)
def test_a_lease_value_decodes_to_a_lease_or_a_named_rejection(value: bytes, key: str) -> None:
    result = outcome(lambda: decode_lease(key, value), CorruptLease)
    if isinstance(result, CorruptLease):
        assert result.reason and key in str(result)
    else:
        assert isinstance(result, Lease)
        assert result.attrs.public_ip is None or isinstance(result.attrs.public_ip, IPv4Address)
        assert result.attrs.public_ipv6 is None or isinstance(result.attrs.public_ipv6, IPv6Address)


keys = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}-[0-9]{1,2}", fullmatch=True),
    st.sampled_from(
        [
            "10.244.241.0-２４",
            "10.244.3.0-24\n",
            "１0.244.3.0-24",
            "10.244.3.0-24&FC00::-64",
            "10.244.3.0-24&fc00::-64\n",
            "10.244.3.0-" + "4" * 5000,
        ]
    ),
)


@FUZZ
@given(keys)
def test_a_key_is_an_ascii_flannel_key_or_rejected_by_name(key: str) -> None:
    result = outcome(lambda: parse_subnet_key(key), CorruptLease)
    if isinstance(result, CorruptLease):
        assert result.reason == "KEY_INVALID"
    else:
        v4, v6 = result
        assert key.isascii() and not key.endswith("\n")
        assert v4 is None or isinstance(v4, IPv4Network)
        assert v6 is None or isinstance(v6, IPv6Network)


@pytest.mark.parametrize("key", ["10.244.241.0-２４", "10.244.3.0-24\n", "10.244.3.0-24 ", " 10.244.3.0-24"])
def test_the_keys_found_by_the_audit_are_rejected(key: str) -> None:
    with pytest.raises(CorruptLease) as info:
        parse_subnet_key(key)
    assert info.value.reason == "KEY_INVALID"


_names = itertools.count(2)


@functools.cache
def kube_manager() -> Any:
    from lease_service.subnet.kube import KubeSubnetManager
    from lease_service.subnet.kube_api import KubeApi
    from lease_service.subnet.kube_config import KubeConnection

    return KubeSubnetManager(KubeApi(KubeConnection("http://127.0.0.1:1")), "n1")


annotation_values = st.one_of(
    st.text(max_size=80), json_values.map(str), hostile_bytes.map(lambda b: b.decode("utf-8", "replace"))
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "public-ip",
                "public-ipv6",
                "backend-data",
                "backend-type",
                "backend-v6-data",
                "public-ip-overwrite",
            ]
        ),
        annotation_values,
    ),
    st.one_of(st.none(), st.text(max_size=20), st.just("10.244.3.0/24")),
)
def test_node_annotations_decode_to_a_lease_or_a_named_rejection(
    notes: dict[str, str], cidr: str | None
) -> None:
    manager = kube_manager()
    annotations = {
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        **{f"flannel.alpha.coreos.com/{k}": v for k, v in notes.items()},
    }
    name = f"n{next(_names)}"  # a new node each time: each rejection is logged (and counted) once per node
    node = {"metadata": {"name": name, "annotations": annotations}, "spec": {"podCIDR": cidr} if cidr else {}}
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    # _decode is what the reflector calls: never raises, a rejection is counted and logged once.
    before = manager.skipped_nodes
    lease = bounded(lambda: manager._decode(config, node))
    assert lease is not None or manager.skipped_nodes == before + 1
    if lease is not None:
        assert isinstance(lease.attrs.public_ip, IPv4Address)
    wanted = manager._wanted_annotations(LeaseAttrs(IPv4Address("192.168.0.1")), annotations)
    IPv4Address(wanted["flannel.alpha.coreos.com/public-ip"])  # never an annotation copied verbatim


netconf_docs = st.one_of(
    hostile_bytes,
    st.fixed_dictionaries(
        {"Network": st.one_of(st.just("10.244.0.0/16"), json_values)},
        optional={
            "SubnetLen": json_values,
            "SubnetMin": json_values,
            "SubnetMax": json_values,
            "EnableIPv6": json_values,
            "IPv6Network": json_values,
            "Backend": st.one_of(st.just({"Type": "vxlan"}), json_values),
        },
    ).map(lambda d: json.dumps(d).encode()),
)


@FUZZ
@given(netconf_docs)
def test_a_network_config_parses_or_is_a_config_error(text: bytes) -> None:
    result = outcome(lambda: parse_network_config(text, "net-conf.json"), ConfigError)
    assert isinstance(result, (NetworkConfig, ConfigError))
    if isinstance(result, ConfigError):
        assert str(result).startswith("net-conf.json") or "net-conf.json" in str(result)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.sampled_from(["djF8ZXRjZDphYmM6L3h8MA", ""]),
        st.integers(0, 10**30).map(
            lambda r: base64.urlsafe_b64encode(f"v1|etcd:0000000000000001:/p|{r}".encode()).decode()
        ),
    )
)
def test_a_cursor_resolves_to_a_revision_this_store_has_or_a_reason(cursor: str) -> None:
    hub = LeaseHub("etcd:0000000000000001:/p")
    hub.revision = 1000
    revision, why = bounded(lambda: hub.parse_cursor(cursor))
    if revision is None:
        assert why
    else:
        assert 0 < revision <= 1000 and not why


def test_revision_zero_and_another_clusters_cursor_are_not_resumed() -> None:
    hub = LeaseHub("etcd:0000000000000001:/p")
    hub.revision = 10
    other = LeaseHub("etcd:0000000000000002:/p")
    assert hub.parse_cursor(hub.cursor(0)) == (None, "revision 0 names no state of the store")
    revision, why = hub.parse_cursor(other.cursor(5))
    assert revision is None and "another store" in why
    assert hub.parse_cursor(hub.cursor(5)) == (5, "")


requests = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda t, d, m: lease_pb2.AcquireLeaseRequest(
            backend_type=t, backend_data=d, mtu=m
        ).SerializeToString(),
        st.text(max_size=10),
        annotation_values,
        st.integers(0, 2**32 - 1),
    ),
)


@FUZZ
@given(requests)
def test_request_bytes_decode_to_the_message_or_to_undecodable(data: bytes) -> None:
    decoded = bounded(lambda: _tolerant(lease_pb2.AcquireLeaseRequest.FromString)(data))  # type: ignore[misc]
    assert isinstance(decoded, (lease_pb2.AcquireLeaseRequest, _Undecodable))
    if isinstance(decoded, lease_pb2.AcquireLeaseRequest) and decoded.backend_data:
        result = outcome(lambda: decode_json(decoded.backend_data, ANNOTATION, "backend_data"), Rejected)
        assert not isinstance(result, Rejected) or result.reason in REASONS


peer_leases = st.builds(
    lambda subnet, ip, data, key: lease_pb2.Lease(
        subnet=subnet, public_ip=ip, backend_type="vxlan", backend_data=data, key=key
    ),
    st.one_of(st.just("10.244.5.0/24"), st.text(max_size=20)),
    st.one_of(
        st.sampled_from(
            [
                "192.168.1.5",
                "255.255.255.255",
                "224.0.0.1",
                "0.0.0.0",
                "127.0.0.1",
                "169.254.1.1",
                "240.0.0.1",
                "x" * 100_000,
            ]
        ),
        st.ip_addresses(v=4).map(str),
        st.text(max_size=20),
    ),
    annotation_values,
    st.text(max_size=30),
)


@FUZZ
@given(peer_leases)
def test_a_streamed_lease_parses_to_a_peer_or_a_named_rejection(msg: lease_pb2.Lease) -> None:
    result = outcome(lambda: parse_lease(msg), LeaseError)
    if isinstance(result, LeaseError):
        assert result.reason in BACKEND_REASONS
        assert len(result.message) < 1000  # values are shortened
    else:
        assert isinstance(result, PeerLease)
        if result.public_ip is not None:
            ip = result.public_ip
            assert not (ip.is_multicast or ip.is_loopback or ip.is_unspecified or ip.is_link_local)
            assert ip != IPv4Address("255.255.255.255")


@pytest.mark.parametrize(
    "ip", ["255.255.255.255", "224.0.0.1", "0.0.0.0", "127.0.0.1", "224.0.0.251", "169.254.0.1", "240.0.0.1"]
)
def test_public_ips_no_node_can_have_are_refused_by_name(ip: str) -> None:
    with pytest.raises(LeaseError) as info:
        parse_lease(lease_pb2.Lease(subnet="10.244.5.0/24", public_ip=ip, backend_type="host-gw"))
    assert info.value.reason == "PUBLIC_IP_NOT_UNICAST"


@pytest.mark.parametrize("ip", ["ff02::1", "::1", "::", "fe80::1", "::ffff:10.0.0.1"])
def test_ipv6_public_ips_no_node_can_have_are_refused_by_name(ip: str) -> None:
    with pytest.raises(LeaseError) as info:
        parse_lease(lease_pb2.Lease(ipv6_subnet="fc00:0:0:5::/64", public_ipv6=ip, backend_type="host-gw"))
    assert info.value.reason == "PUBLIC_IP_NOT_UNICAST"
