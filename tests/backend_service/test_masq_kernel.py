"""Masquerade rules in a namespace: applied atomically, drift detected and repaired."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from backend_service.masq import IptablesMasq, MasqNetwork, NftablesMasq, forward_rules, masq_rules
from flannel_testkit.netns import Netns

pytestmark = pytest.mark.netns

NET4 = MasqNetwork(ip_network("10.244.0.0/16"), ip_network("10.244.1.0/24"))
NET6 = MasqNetwork(ip_network("fd00:10::/56"), ip_network("fd00:10:0:1::/64"))


def chain(ns: Netns, table: str, name: str, tool: str = "iptables") -> list[str]:
    lines = ns.run([tool, "-t", table, "-S", name]).stdout.splitlines()
    return [line.split(" ", 2)[2] for line in lines if line.startswith("-A ")]


def jumps(ns: Netns, table: str, builtin: str, target: str, tool: str = "iptables") -> int:
    return sum(
        line.endswith(f"-j {target}")
        for line in ns.run([tool, "-t", table, "-S", builtin]).stdout.splitlines()
    )


async def test_iptables_rules_are_flannels_and_repaired_after_drift(one_node: Netns) -> None:
    ns = one_node
    masq = IptablesMasq([NET4, NET6], command_prefix=ns.exec_prefix)
    assert await masq.check()  # nothing there yet
    assert await masq.ensure() is True
    assert chain(ns, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4)
    assert chain(ns, "filter", "FLANNEL-FWD") == forward_rules(NET4)
    assert chain(ns, "nat", "FLANNEL-POSTRTG", "ip6tables") == masq_rules(NET6)
    assert jumps(ns, "nat", "POSTROUTING", "FLANNEL-POSTRTG") == 1
    assert jumps(ns, "filter", "FORWARD", "FLANNEL-FWD") == 1
    assert (
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'
        in ns.run(["iptables", "-t", "nat", "-S"]).stdout
    )
    assert await masq.check() == []
    assert await masq.ensure() is False  # in place: nothing to do

    # Someone deletes a rule and the jump: detected, and repaired without duplicates.
    ns.run(["iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "3"])
    ns.run(["iptables", "-t", "filter", "-D", "FORWARD", "1"])
    drift = await masq.check()
    assert any("FLANNEL-POSTRTG differs" in d for d in drift)
    assert any("jump from FORWARD" in d for d in drift)
    assert await masq.ensure() is True
    assert chain(ns, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4)
    assert jumps(ns, "nat", "POSTROUTING", "FLANNEL-POSTRTG") == 1
    assert jumps(ns, "filter", "FORWARD", "FLANNEL-FWD") == 1
    assert await masq.check() == []

    # A rule appended by someone else into our chain is drift too.
    ns.run(["iptables", "-t", "nat", "-A", "FLANNEL-POSTRTG", "-j", "RETURN"])
    assert await masq.check()
    await masq.ensure()
    assert chain(ns, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4)

    # Explicit cleanup only.
    await masq.cleanup()
    assert "FLANNEL" not in ns.run(["iptables-save"]).stdout
    assert "FLANNEL" not in ns.run(["ip6tables-save"]).stdout


async def test_nftables_mode_tables_repaired_after_drift(one_node: Netns) -> None:
    ns = one_node
    masq = NftablesMasq([NET4, NET6], command_prefix=ns.exec_prefix)
    assert await masq.ensure() is True
    listing = ns.run(["nft", "list", "table", "ip", "flannel-ipv4"]).stdout
    assert "type nat hook postrouting priority srcnat" in listing
    assert "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random" in listing
    assert "ip saddr 10.244.0.0/16 accept" in listing
    assert (
        "ip6 saddr fd00:10::/56 ip6 daddr != ff00::/8 masquerade fully-random"
        in ns.run(["nft", "list", "table", "ip6", "flannel-ipv6"]).stdout
    )
    assert await masq.check() == []
    assert await masq.ensure() is False

    ns.run(["nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"])
    assert await masq.check() == ["nft table flannel-ipv4 differs from what was applied"]
    assert await masq.ensure() is True
    assert ns.run(["nft", "list", "table", "ip", "flannel-ipv4"]).stdout == listing

    ns.run(["nft", "delete", "table", "ip", "flannel-ipv4"])
    assert await masq.ensure() is True
    assert await masq.check() == []

    await masq.cleanup()
    assert "flannel" not in ns.run(["nft", "list", "tables"]).stdout
