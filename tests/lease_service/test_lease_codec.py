"""flannel's etcd lease encoding: keys and JSON values, and corrupt ones."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from lease_service.lease import (
    CorruptLease,
    LeaseAttrs,
    check_against_config,
    decode_lease,
    encode_attrs,
    make_subnet_key,
    parse_subnet_key,
)
from lease_service.netconfig import parse_network_config


def test_keys_are_flannels() -> None:
    assert make_subnet_key(IPv4Network("10.244.3.0/24"), None) == "10.244.3.0-24"
    dual = make_subnet_key(IPv4Network("10.244.3.0/24"), IPv6Network("fc00:0:0:3::/64"))
    assert dual == "10.244.3.0-24&fc00:0:0:3::-64"
    assert parse_subnet_key(dual) == (IPv4Network("10.244.3.0/24"), IPv6Network("fc00:0:0:3::/64"))


def test_values_round_trip_with_flannels_field_names() -> None:
    attrs = LeaseAttrs(IPv4Address("192.168.1.5"), None, "vxlan", '{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}')
    raw = json.loads(encode_attrs(attrs))
    assert raw == {
        "PublicIP": "192.168.1.5",
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": "0a:00:00:00:00:01"},
    }
    assert decode_lease("10.244.3.0-24", encode_attrs(attrs)).attrs == attrs


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("10.244.3.0-24", b"not json", ["10.244.3.0-24", "not JSON"]),
        ("10.244.3.0-24", b"[1,2]", ["JSON object"]),
        ("10.244.3.0-24", b'{"PublicIP": 7}', ["PublicIP", "7"]),
        ("10.244.3.0-24", b'{"PublicIP": "1.2.3"}', ["PublicIP", "1.2.3"]),
        ("10.244.3.0-24", b'{"BackendType": "vxlan"}', ["PublicIP", "missing"]),
        ("10.244.3.0-24", b'{"PublicIP": "1.2.3.4", "BackendType": 5}', ["BackendType"]),
        ("banana", b'{"PublicIP": "1.2.3.4"}', ["banana", "subnet key"]),
        ("10.244.3.7-24", b'{"PublicIP": "1.2.3.4"}', ["10.244.3.7-24"]),
        ("10.244.3.0-99", b'{"PublicIP": "1.2.3.4"}', ["10.244.3.0-99"]),
    ],
)
def test_corrupt_leases_name_the_key_and_the_problem(key: str, value: bytes, words: list[str]) -> None:
    with pytest.raises(CorruptLease) as err:
        decode_lease(key, value)
    for word in words:
        assert word in str(err.value)


def test_a_subnet_outside_the_network_or_of_another_size_is_corrupt() -> None:
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    value = b'{"PublicIP": "1.2.3.4"}'
    check_against_config(decode_lease("10.244.3.0-24", value), config)
    with pytest.raises(CorruptLease, match="outside"):
        check_against_config(decode_lease("10.99.3.0-24", value), config)
    with pytest.raises(CorruptLease, match="/24"):
        check_against_config(decode_lease("10.244.4.0-25", value), config)
