"""The delegate config flannel-cni builds, field by field against flannel's cni-plugin (doCmdAdd,
getDelegateIPAM), and the subnet.env it reads."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from flannel_cni.delegate import delegate_config
from flannel_cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG, CniError
from flannel_cni.netconf import DEFAULT_DATA_DIR, DEFAULT_SUBNET_FILE, parse_netconf
from flannel_cni.subnetenv import SubnetEnv, parse_subnet_env

ENV = Path("/run/flannel/subnet.env")
V4 = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
DUAL = V4 + "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n"


def conf(**fields: object) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel", **fields}).encode()


def build(text: str = V4, **fields: object) -> dict[str, object]:
    return delegate_config(parse_netconf(conf(**fields)), parse_subnet_env(text, ENV))


def test_kube_flannels_conf_gives_a_bridge_with_host_local_ranges_and_routes_to_the_network() -> None:
    got = build(delegate={"hairpinMode": True, "isDefaultGateway": True})
    assert got == {
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "type": "bridge",
        "hairpinMode": True,
        "isDefaultGateway": True,
        "ipMasq": False,  # flanneld masquerades (FLANNEL_IPMASQ=true), so the bridge does not
        "mtu": 1450,
        "isGateway": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.244.3.0/24"}]],
            "routes": [{"dst": "10.244.0.0/16"}],
        },
    }


def test_the_bridge_masquerades_when_flanneld_does_not() -> None:
    assert build(V4.replace("IPMASQ=true", "IPMASQ=false"))["ipMasq"] is True
    assert build(V4.replace("IPMASQ=true", "IPMASQ=yes"))["ipMasq"] is True  # only "true" is true


def test_the_delegates_own_values_win_over_subnet_env() -> None:
    got = build(
        delegate={"type": "bridge", "ipMasq": True, "mtu": 1400, "isGateway": False, "bridge": "kube0"}
    )
    assert (got["ipMasq"], got["mtu"], got["isGateway"], got["bridge"]) == (True, 1400, False, "kube0")


def test_is_gateway_is_only_set_for_the_bridge() -> None:
    assert "isGateway" not in build(delegate={"type": "ipvlan", "master": "eth0"})


def test_dual_stack_gives_one_range_set_per_family_and_routes_to_both_networks() -> None:
    ipam = build(DUAL)["ipam"]
    assert ipam == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00:10:244:3::/64"}]],
        "routes": [{"dst": "10.244.0.0/16"}, {"dst": "fd00:10:244::/56"}],
    }


def test_ipv6_only_has_no_ipv4_range() -> None:
    text = "FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
    assert build(text)["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "fd00:0:0:3::/64"}]],
        "routes": [{"dst": "fd00::/56"}],
    }


def test_the_configs_ipam_is_kept_and_its_routes_come_first() -> None:
    ipam = build(
        ipam={
            "type": "host-local",
            "dataDir": "/tmp/x",
            "routes": [{"dst": "192.168.0.0/16", "gw": "10.244.3.1"}],
            "ranges": [[{"subnet": "1.2.3.0/24"}]],
        }
    )["ipam"]
    assert ipam == {
        "type": "host-local",
        "dataDir": "/tmp/x",
        "ranges": [[{"subnet": "10.244.3.0/24"}]],
        "routes": [{"dst": "192.168.0.0/16", "gw": "10.244.3.1"}, {"dst": "10.244.0.0/16"}],
    }


def test_several_networks_each_get_a_route_once() -> None:
    text = V4.replace("10.244.0.0/16", "10.244.0.0/16,10.245.0.0/16,10.244.0.0/16")
    ipam = build(text)["ipam"]
    assert isinstance(ipam, dict) and ipam["routes"] == [{"dst": "10.244.0.0/16"}, {"dst": "10.245.0.0/16"}]


def test_runtime_config_is_handed_to_the_delegate_and_cni_version_follows_the_config() -> None:
    got = build(runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    assert got["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    }
    without = delegate_config(
        parse_netconf(b'{"name": "n", "delegate": {"cniVersion": "0.3.1"}}'), parse_subnet_env(V4, ENV)
    )
    assert without["cniVersion"] == "0.3.1"


@pytest.mark.parametrize(
    ("delegate", "words"),
    [
        ({"name": "x"}, "'name'"),
        ({"ipam": {}}, "'ipam'"),
        ({"type": 7}, "'delegate.type' must be a string"),
    ],
)
def test_a_delegate_that_sets_what_flannel_sets_is_refused(delegate: dict[str, object], words: str) -> None:
    with pytest.raises(CniError) as caught:
        build(delegate=delegate)
    assert caught.value.code == INVALID_NETWORK_CONFIG and words in caught.value.msg


def test_defaults_are_flannels() -> None:
    parsed = parse_netconf(b'{"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel"}')
    assert (parsed.subnet_file, parsed.data_dir) == (DEFAULT_SUBNET_FILE, DEFAULT_DATA_DIR)
    assert (str(DEFAULT_SUBNET_FILE), str(DEFAULT_DATA_DIR)) == (
        "/run/flannel/subnet.env",
        "/var/lib/cni/flannel",
    )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{", DECODE_FAILURE),
        (b"[]", DECODE_FAILURE),
        (b"[" * 100_000, DECODE_FAILURE),
        (b" " * (1 << 20) + b"{}", DECODE_FAILURE),
        (b'{"cniVersion": "9.9.9"}', INCOMPATIBLE_VERSION),
        (b'{"subnetFile": 3}', INVALID_NETWORK_CONFIG),
        (b'{"delegate": []}', INVALID_NETWORK_CONFIG),
        (b'{"ipam": "host-local"}', INVALID_NETWORK_CONFIG),
    ],
)
def test_bad_network_configs_are_named_rejections(data: bytes, code: int) -> None:
    with pytest.raises(CniError) as caught:
        parse_netconf(data)
    assert caught.value.code == code


def test_subnet_env_values_are_parsed_as_flannel_parses_them() -> None:
    env = parse_subnet_env(DUAL.replace("\n", "\r\n") + "OTHER=x\n# comment\n", ENV)
    assert env == SubnetEnv(
        networks=(ipaddress.IPv4Network("10.244.0.0/16"),),
        subnet=ipaddress.IPv4Network("10.244.3.0/24"),
        ipv6_networks=(ipaddress.IPv6Network("fd00:10:244::/56"),),
        ipv6_subnet=ipaddress.IPv6Network("fd00:10:244:3::/64"),
        mtu=1450,
        ipmasq=True,
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            "missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET",
        ),
        (V4.replace("FLANNEL_MTU=1450\n", ""), "missing FLANNEL_MTU"),
        (V4.replace("FLANNEL_IPMASQ=true\n", ""), "missing FLANNEL_IPMASQ"),
        (V4.replace("1450", "-1"), "FLANNEL_MTU='-1'"),
        (V4.replace("1450", "4294967296"), "unsigned 32-bit"),
        (V4.replace("10.244.3.1/24", "10.244.3.1"), "FLANNEL_SUBNET='10.244.3.1' is not a CIDR"),
        (V4.replace("10.244.3.1/24", "fd00::1/64"), "is not an IPv4 CIDR"),
        (V4 + "FLANNEL_NETWORK\n", "has no '='"),
    ],
)
def test_a_bad_subnet_env_is_a_named_rejection(text: str, words: str) -> None:
    with pytest.raises(CniError) as caught:
        parse_subnet_env(text, ENV)
    assert caught.value.code == DECODE_FAILURE and words in caught.value.msg, caught.value.msg
