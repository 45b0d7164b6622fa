"""flannel's network config rules: defaults, bounds and errors that name the field."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address

import pytest

from lease_service.netconfig import ConfigError, parse_network_config


def config(**fields: object) -> str:
    doc: dict[str, object] = {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None})


def test_a_wide_network_gets_slash_24_subnets_from_the_second_to_the_last() -> None:
    c = parse_network_config(config())
    assert (c.subnet_len, c.subnet_min, c.subnet_max) == (
        24,
        IPv4Address("10.244.1.0"),
        IPv4Address("10.244.255.0"),
    )
    assert c.enable_ipv4 and not c.enable_ipv6


def test_a_narrow_network_is_split_in_four() -> None:
    c = parse_network_config(config(Network="10.0.0.0/26"))
    assert c.subnet_len == 28
    assert c.subnet_min == IPv4Address("10.0.0.16")
    assert c.subnet_max == IPv4Address("10.0.0.48")


def test_ipv6_defaults_to_slash_64() -> None:
    c = parse_network_config(config(EnableIPv6=True, IPv6Network="fc00::/48"))
    assert c.ipv6_subnet_len == 64
    assert c.ipv6_subnet_min == IPv6Address("fc00:0:0:1::")
    assert c.ipv6_subnet_max == IPv6Address("fc00:0:0:ffff::")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"Network": None}, ["Network", "required"]),
        ({"Network": "10.0.0.0/29"}, ["Network", "10.0.0.0/29", "too small"]),
        ({"Network": "banana"}, ["Network", "banana"]),
        ({"SubnetLen": 31}, ["SubnetLen", "31"]),
        ({"SubnetLen": 17}, ["SubnetLen", "17", "at least 18"]),
        ({"SubnetLen": "24"}, ["SubnetLen", "'24'"]),
        ({"SubnetMin": "10.245.0.0"}, ["SubnetMin", "10.245.0.0", "outside"]),
        ({"SubnetMax": "10.244.3.7"}, ["SubnetMax", "10.244.3.7", "boundary"]),
        ({"SubnetMin": "10.244.9.0", "SubnetMax": "10.244.3.0"}, ["SubnetMin", "above"]),
        ({"EnableIPv6": True}, ["IPv6Network", "required"]),
        ({"EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetLen": 127}, ["IPv6SubnetLen", "127"]),
        ({"EnableIPv4": "yes"}, ["EnableIPv4", "'yes'"]),
        ({"Backend": None}, ["Backend", "udp", "vxlan, host-gw"]),
        ({"Backend": {}}, ["Backend.Type", "udp", "vxlan, host-gw"]),
        ({"Backend": {"Type": "udp"}}, ["Backend.Type", "udp", "vxlan, host-gw"]),
        ({"Backend": "vxlan"}, ["Backend", "object"]),
    ],
)
def test_bad_configs_are_refused_naming_the_field_and_value(
    fields: dict[str, object], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_network_config(config(**fields))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("text", ["", "{", "[1]", b"\xff"])
def test_text_that_is_not_a_json_object_is_refused(text: str | bytes) -> None:
    with pytest.raises(ConfigError):
        parse_network_config(text)


def test_a_type_we_do_not_build_in_is_left_to_a_third_party_backend() -> None:
    assert (
        parse_network_config(config(Backend={"Type": "extension", "SubnetAddCommand": "true"})).backend_type
        == "extension"
    )


def test_enable_nftables_is_accepted_and_must_be_a_boolean() -> None:
    assert parse_network_config(config(EnableNFTables=True)).raw
    with pytest.raises(ConfigError, match="EnableNFTables must be true or false, got 'yes'"):
        parse_network_config(config(EnableNFTables="yes"))
