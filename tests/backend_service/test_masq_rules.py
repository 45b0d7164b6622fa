"""flannel's masquerade and forward rules, as text (kernel tests are in test_masq_kernel.py)."""

from __future__ import annotations

from ipaddress import ip_network

from backend_service.masq import MasqNetwork, forward_rules, masq_rules, nft_ruleset

NET4 = MasqNetwork(ip_network("10.244.0.0/16"), ip_network("10.244.1.0/24"))
NET6 = MasqNetwork(ip_network("fd00:10::/56"), ip_network("fd00:10:0:1::/64"))
C = '-m comment --comment "flanneld masq"'


def test_ipv4_masquerade_rules_are_flannels() -> None:
    assert masq_rules(NET4) == [
        f"-m mark --mark 0x4000/0x4000 {C} -j RETURN",
        f"-s 10.244.1.0/24 -d 10.244.0.0/16 {C} -j RETURN",
        f"-s 10.244.0.0/16 -d 10.244.1.0/24 {C} -j RETURN",
        f"! -s 10.244.0.0/16 -d 10.244.1.0/24 {C} -j RETURN",
        f"-s 10.244.0.0/16 ! -d 224.0.0.0/4 {C} -j MASQUERADE --random-fully",
        f"! -s 10.244.0.0/16 -d 10.244.0.0/16 {C} -j MASQUERADE --random-fully",
    ]


def test_without_random_fully() -> None:
    assert all(not r.endswith("--random-fully") for r in masq_rules(NET4, random_fully=False))


def test_ipv6_uses_ipv6_multicast() -> None:
    assert f"-s fd00:10::/56 ! -d ff00::/8 {C} -j MASQUERADE --random-fully" in masq_rules(NET6)


def test_forward_rules() -> None:
    c = '-m comment --comment "flanneld forward"'
    assert forward_rules(NET4) == [f"-s 10.244.0.0/16 {c} -j ACCEPT", f"-d 10.244.0.0/16 {c} -j ACCEPT"]


def test_nft_ruleset_replaces_its_own_table_atomically() -> None:
    text = nft_ruleset(NET4)
    lines = text.splitlines()
    assert lines[:3] == ["table ip flannel-ipv4", "delete table ip flannel-ipv4", "table ip flannel-ipv4 {"]
    assert "\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random" in lines
    assert "table ip6 flannel-ipv6" in nft_ruleset(NET6)
