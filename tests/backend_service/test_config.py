"""The network config and Backend JSON become typed options, or a ConfigError naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from ipaddress import ip_network

import pytest

from backend_service.config import (
    ConfigError,
    HostGwOptions,
    VxlanOptions,
    WireGuardOptions,
    parse_backend,
    parse_network_config,
)
from proto.flannel.v1 import lease_pb2


def netconf(backend: Mapping[str, object] | str, **kw: object) -> lease_pb2.NetworkConfig:
    text = backend if isinstance(backend, str) else json.dumps(backend)
    fields: dict[str, object] = {
        "enable_ipv4": True,
        "network": "10.244.0.0/16",
        "subnet_len": 24,
        "backend": text,
    }
    fields.update(kw)
    return lease_pb2.NetworkConfig(**fields)  # type: ignore[arg-type]


def test_vxlan_defaults_are_flannels() -> None:
    cfg = parse_network_config(netconf({"Type": "vxlan"}))
    assert cfg.backend_type == "vxlan"
    assert cfg.backend == VxlanOptions(
        vni=1, port=8472, gbp=False, direct_routing=False, learning=False, mtu=0
    )
    assert cfg.network == ip_network("10.244.0.0/16")
    assert cfg.subnet_len == 24
    assert cfg.ipv6_network is None


def test_vxlan_options_are_read_case_insensitively_and_unknown_keys_ignored() -> None:
    _, opts = parse_backend(
        json.dumps(
            {
                "type": "vxlan",
                "vni": 42,
                "Port": 4789,
                "GBP": True,
                "directrouting": True,
                "Learning": True,
                "MTU": 1400,
                "MacPrefix": "0E:2A",
                "Whatever": 1,
            }
        )
    )
    assert opts == VxlanOptions(vni=42, port=4789, gbp=True, direct_routing=True, learning=True, mtu=1400)


def test_port_zero_means_the_default_port() -> None:
    assert parse_backend('{"Type":"vxlan","Port":0}')[1] == VxlanOptions(port=8472)


def test_mtu_zero_is_underlay_minus_overhead() -> None:
    assert VxlanOptions().device_mtu(1500) == 1450
    assert VxlanOptions().device_mtu(1500, ipv6=True) == 1430
    assert VxlanOptions().pod_mtu(1500) == 1450


def test_the_mtu_option_is_the_underlay_mtu_as_in_flannel() -> None:
    # flannel: device MTU = MTU - 50 and FLANNEL_MTU = MTU - 50, whatever the interface's MTU
    assert VxlanOptions(mtu=1400).device_mtu(9000) == 1350
    assert VxlanOptions(mtu=1400).device_mtu(9000, ipv6=True) == 1330
    assert VxlanOptions(mtu=1400).pod_mtu(9000) == 1350
    assert VxlanOptions(mtu=9000).pod_mtu(1500) == 8950


def test_host_gw_has_no_options() -> None:
    cfg = parse_network_config(netconf({"Type": "host-gw"}))
    assert cfg.backend_type == "host-gw"
    assert cfg.backend == HostGwOptions()


def test_type_from_the_proto_field_when_the_json_has_none() -> None:
    assert parse_backend("", "host-gw") == ("host-gw", HostGwOptions())


@pytest.mark.parametrize(
    ("backend", "field", "value"),
    [
        ({"Type": "vxlan", "VNI": "1"}, "Backend.VNI", "1"),
        ({"Type": "vxlan", "VNI": 1 << 24}, "Backend.VNI", 1 << 24),
        ({"Type": "vxlan", "VNI": -1}, "Backend.VNI", -1),
        ({"Type": "vxlan", "VNI": True}, "Backend.VNI", True),
        ({"Type": "vxlan", "Port": 70000}, "Backend.Port", 70000),
        ({"Type": "vxlan", "GBP": "yes"}, "Backend.GBP", "yes"),
        ({"Type": "vxlan", "DirectRouting": 1}, "Backend.DirectRouting", 1),
        ({"Type": "vxlan", "MTU": 1.5}, "Backend.MTU", 1.5),
        ({"Type": 5}, "Backend.Type", 5),
        ("[1, 2]", "Backend", [1, 2]),
    ],
)
def test_bad_backend_options_name_field_and_value(
    backend: dict[str, object] | str, field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_network_config(netconf(backend))
    assert err.value.field == field
    assert err.value.value == value
    assert field in str(err.value) and repr(value) in str(err.value)


def test_unsupported_type_names_the_supported_ones() -> None:
    with pytest.raises(ConfigError, match=r"'ipsec'.*'vxlan', 'host-gw', 'wireguard'"):
        parse_network_config(netconf({"Type": "ipsec"}))


def test_wireguard_options_default_as_flannel() -> None:
    config = parse_network_config(netconf({"Type": "wireguard"}))
    assert config.backend == WireGuardOptions(None, 51820, 51821, 0, 0, "separate")
    assert config.backend.device_mtu(1500) == 1420


def test_wireguard_options_are_read() -> None:
    psk = "cHNrcHNrcHNrcHNrcHNrcHNrcHNrcHNrcHNrcHNrcHM="
    config = parse_network_config(
        netconf(
            {
                "Type": "wireguard",
                "psk": psk,
                "ListenPort": 5000,
                "ListenPortV6": 5001,
                "MTU": 9000,
                "PersistentKeepaliveInterval": 25,
                "Mode": "auto",
            }
        )
    )
    assert config.backend == WireGuardOptions(psk, 5000, 5001, 9000, 25, "auto")
    assert config.backend.device_mtu(1500) == 8920


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"PSK": "not a key"}, "Backend.PSK"),
        ({"PSK": 12}, "Backend.PSK"),
        ({"Mode": "both"}, "Backend.Mode"),
        ({"ListenPort": 0}, "Backend.ListenPort"),
        ({"ListenPortV6": 70000}, "Backend.ListenPortV6"),
        ({"PersistentKeepaliveInterval": "25s"}, "Backend.PersistentKeepaliveInterval"),
    ],
)
def test_bad_wireguard_options_are_named_and_a_psk_is_never_echoed(
    options: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_network_config(netconf({"Type": "wireguard", **options}))
    assert err.value.field == field
    assert "not a key" not in str(err.value)


def test_no_type_at_all_is_refused() -> None:
    with pytest.raises(ConfigError, match="Backend.Type"):
        parse_network_config(netconf("{}"))


def test_json_type_must_agree_with_proto_type() -> None:
    with pytest.raises(ConfigError, match="backend_type"):
        parse_network_config(netconf({"Type": "vxlan"}, backend_type="host-gw"))


def test_malformed_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="JSON"):
        parse_network_config(netconf("{not json"))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"network": "10.244.0.1/16"}, "Network"),
        ({"network": "fd00::/64"}, "Network"),
        ({"network": ""}, "Network"),
        ({"subnet_len": 16}, "SubnetLen"),
        ({"subnet_len": 33}, "SubnetLen"),
        ({"enable_ipv6": True, "ipv6_network": "10.0.0.0/8", "ipv6_subnet_len": 80}, "IPv6Network"),
        ({"enable_ipv6": True, "ipv6_network": "fd00::/64", "ipv6_subnet_len": 48}, "IPv6SubnetLen"),
        ({"enable_ipv4": False}, "EnableIPv4/EnableIPv6"),
    ],
)
def test_bad_network_fields(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_network_config(netconf({"Type": "vxlan"}, **kw))
    assert err.value.field == field


def test_dual_stack() -> None:
    cfg = parse_network_config(
        netconf({"Type": "vxlan"}, enable_ipv6=True, ipv6_network="fd00:10::/56", ipv6_subnet_len=64)
    )
    assert cfg.enable_ipv4 and cfg.enable_ipv6
    assert cfg.ipv6_network == ip_network("fd00:10::/56")
    assert cfg.ipv6_subnet_len == 64


def test_ipv6_only() -> None:
    cfg = parse_network_config(
        netconf(
            {"Type": "vxlan"},
            enable_ipv4=False,
            network="",
            subnet_len=0,
            enable_ipv6=True,
            ipv6_network="fd00:10::/56",
            ipv6_subnet_len=64,
        )
    )
    assert cfg.network is None and cfg.subnet_len == 0


def test_enable_nftables_comes_from_the_raw_config() -> None:
    vxlan = {"Type": "vxlan"}
    assert parse_network_config(netconf(vxlan)).enable_nftables is False
    raw = json.dumps({"Network": "10.244.0.0/16", "EnableNFTables": True, "Backend": vxlan})
    assert parse_network_config(netconf(vxlan, raw=raw)).enable_nftables is True
    with pytest.raises(ConfigError, match="EnableNFTables"):
        parse_network_config(netconf(vxlan, raw=json.dumps({"EnableNFTables": 1})))
