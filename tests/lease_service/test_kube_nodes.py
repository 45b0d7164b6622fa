"""Turning Node objects into leases: flannel's annotations, pod CIDRs, and bad input named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flannel_rpc import vxlan_data
from lease_service.lease import CorruptLease, canonical_json
from lease_service.netconfig import ConfigError, parse_network_config
from lease_service.subnet.kube import Annotations, KubeSubnetManager

P = "flannel.alpha.coreos.com/"
CONFIG = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')


def node(name: str = "n1", pod_cidr: str | None = "10.244.3.0/24", **notes: str) -> dict[str, Any]:
    annotations = {
        "node.alpha.kubernetes.io/ttl": "0",
        P + "kube-subnet-manager": "true",
        P + "public-ip": "192.168.1.3",
        P + "backend-type": "vxlan",
        P + "backend-data": '{"VNI":1,"VtepMAC":"0a:00:00:00:00:03"}',
    }
    annotations.update({P + k.replace("_", "-"): v for k, v in notes.items()})
    spec = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]} if pod_cidr else {}
    return {"metadata": {"name": name, "annotations": annotations}, "spec": spec}


@pytest.fixture
def manager() -> KubeSubnetManager:
    from lease_service.subnet.kube_api import KubeApi
    from lease_service.subnet.kube_config import KubeConnection

    return KubeSubnetManager(KubeApi(KubeConnection("http://127.0.0.1:1")), "n1")


def test_a_managed_node_becomes_a_lease_keyed_by_its_name(manager: KubeSubnetManager) -> None:
    lease = manager.node_to_lease(CONFIG, node())
    assert lease is not None
    assert (lease.key, str(lease.subnet), str(lease.attrs.public_ip)) == (
        "n1",
        "10.244.3.0/24",
        "192.168.1.3",
    )
    assert lease.attrs.backend_data == '{"VNI":1,"VtepMAC":"0a:00:00:00:00:03"}'


def test_a_node_not_managed_by_a_kube_subnet_manager_is_no_lease(manager: KubeSubnetManager) -> None:
    assert manager.node_to_lease(CONFIG, node(kube_subnet_manager="false")) is None
    bare = {"metadata": {"name": "n9"}, "spec": {}}  # no annotations at all: not a crash
    assert manager.node_to_lease(CONFIG, bare) is None


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (node(backend_data="{nope"), ["n1", "backend-data", "not JSON"]),
        (node(public_ip="300.1.1.1"), ["n1", "public-ip", "300.1.1.1"]),
        (node(pod_cidr=None), ["n1", "pod CIDR"]),
        (node(pod_cidr="10.99.3.0/24"), ["n1", "outside"]),
        (node(pod_cidr="10.244.3.0/25"), ["n1", "/24"]),
        (node(pod_cidr="banana"), ["n1", "banana"]),
    ],
)
def test_bad_nodes_are_refused_naming_the_node(
    manager: KubeSubnetManager, bad: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(CorruptLease) as err:
        manager.node_to_lease(CONFIG, bad)
    for word in words:
        assert word in str(err.value)


_space = st.sampled_from(["", " ", "\n\t"])
vxlan_texts = st.one_of(
    st.builds(
        lambda s, vni, mac: f'{{{s}"VNI"{s}:{s}{vni}{s},{s}"VtepMAC"{s}:{s}"{mac}"{s}}}',
        _space,
        st.one_of(st.integers(0, 1 << 27).map(str), st.sampled_from(["01", "-1", "1.0", "1e3"])),
        st.one_of(
            st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":")),
            st.sampled_from(["0A:58:00:00:01:02", "0a:58:00:00:01", "0a:58:00:00:01:0g"]),
        ),
    ),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(vxlan_texts)
def test_backend_data_read_without_the_json_codec_is_what_the_codec_makes_of_it(text: str) -> None:
    from lease_service.subnet.kube_api import KubeApi
    from lease_service.subnet.kube_config import KubeConnection

    manager = KubeSubnetManager(KubeApi(KubeConnection("http://127.0.0.1:1")), "n1")
    try:
        lease = manager.node_to_lease(CONFIG, node(backend_data=text))
    except CorruptLease as exc:
        assert vxlan_data.fields(text) is None  # only the codec rejects, naming the node and annotation
        assert "n1" in str(exc) and "backend-data" in str(exc)
        return
    assert lease is not None
    if text in ("", "null"):
        assert lease.attrs.backend_data == ""
    else:
        assert lease.attrs.backend_data == canonical_json(json.loads(text))


@pytest.mark.parametrize("prefix", ["a/b/c", "UPPER.case", "nodots/", "bad!.example.com"])
def test_annotation_prefixes_are_validated_as_flannel_does(prefix: str) -> None:
    with pytest.raises(ConfigError, match="kube-annotation-prefix"):
        Annotations.for_prefix(prefix)


def test_a_prefix_with_a_name_part_joins_with_a_dash() -> None:
    assert Annotations.for_prefix("example.com/flannel").public_ip == "example.com/flannel-public-ip"
    assert Annotations.for_prefix("example.com").managed == "example.com/kube-subnet-manager"
