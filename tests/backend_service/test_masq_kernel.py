"""flannel's FORWARD/masquerade rules in a namespace: applied atomically, jumps first, drift repaired, the
other mode's leftovers removed, the random-fully probe, tools missing, and the blackhole route."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
from ipaddress import ip_network
from pathlib import Path

import pytest
from pyroute2 import AsyncIPRoute

from backend_service.blackhole import BLACKHOLE_METRIC, ensure_blackholes, remove_blackholes
from backend_service.masq import (
    Commands,
    IptablesMasq,
    MasqNetwork,
    NftablesMasq,
    RuleOptions,
    ToolsMissing,
    TrafficRules,
    forward_rules,
    masq_rules,
    nft_forward_rules,
    nft_masq_rules,
    remove_leftovers,
)
from flannel_testkit.netns import Netns
from flannel_testkit.wait import async_wait_until

pytestmark = pytest.mark.netns

NET4 = MasqNetwork(ip_network("10.244.0.0/16"), ip_network("10.244.1.0/24"))
NET6 = MasqNetwork(ip_network("fd00:10::/56"), ip_network("fd00:10:0:1::/64"))
BOTH = RuleOptions(masquerade=True, forward=True)


def chain(ns: Netns, table: str, name: str, tool: str = "iptables") -> list[str]:
    lines = ns.run([tool, "-t", table, "-S", name]).stdout.splitlines()
    return [line.split(" ", 2)[2] for line in lines if line.startswith("-A ")]


def builtin(ns: Netns, table: str, name: str, tool: str = "iptables") -> list[str]:
    return chain(ns, table, name, tool)


def cmds(ns: Netns, path: str | None = None) -> Commands:
    return Commands(prefix=tuple(ns.exec_prefix), path=path)


async def test_iptables_rules_are_flannels_jumps_first_and_repaired_after_drift(one_node: Netns) -> None:
    ns = one_node
    # What a Docker host has: a policy of DROP and rules (a trailing REJECT) before flannel starts.
    ns.run(["iptables", "-P", "FORWARD", "DROP"])
    ns.run(["iptables", "-A", "FORWARD", "-j", "REJECT"])
    ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "172.17.0.0/16", "-j", "MASQUERADE"])
    masq = IptablesMasq([NET4, NET6], BOTH, commands=cmds(ns))
    assert await masq.check()  # nothing there yet
    assert await masq.ensure() is True
    assert chain(ns, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4)
    assert chain(ns, "filter", "FLANNEL-FWD") == forward_rules(NET4)
    assert chain(ns, "nat", "FLANNEL-POSTRTG", "ip6tables") == masq_rules(NET6)
    assert chain(ns, "filter", "FLANNEL-FWD", "ip6tables") == forward_rules(NET6)
    assert builtin(ns, "filter", "FORWARD") == [
        '-m comment --comment "flanneld forward" -j FLANNEL-FWD',
        "-j REJECT --reject-with icmp-port-unreachable",
    ]
    assert builtin(ns, "nat", "POSTROUTING") == [
        '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        "-s 172.17.0.0/16 -j MASQUERADE",
    ]
    assert await masq.check() == []
    assert await masq.ensure() is False  # in place: nothing to do

    # Someone deletes a rule and a jump: detected, repaired, without duplicates, jump on top again.
    ns.run(["iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "3"])
    ns.run(["iptables", "-t", "filter", "-D", "FORWARD", "1"])
    drift = await masq.check()
    assert any("chain FLANNEL-POSTRTG has" in d for d in drift), drift
    assert any("jump from FORWARD to FLANNEL-FWD is missing" in d for d in drift), drift
    assert await masq.ensure() is True
    assert chain(ns, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4)
    assert builtin(ns, "filter", "FORWARD")[0] == '-m comment --comment "flanneld forward" -j FLANNEL-FWD'
    assert len(builtin(ns, "filter", "FORWARD")) == 2
    assert await masq.check() == []

    # Rules reordered in our chain, a foreign rule in it, a second jump: all drift.
    ns.run(["iptables", "-t", "nat", "-A", "FLANNEL-POSTRTG", "-j", "RETURN"])
    ns.run(["iptables", "-t", "filter", "-A", "FORWARD", "-j", "FLANNEL-FWD"])
    ns.run(["ip6tables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "1"])
    ns.run(["ip6tables", "-t", "nat", "-A", "FLANNEL-POSTRTG", *shlex.split(masq_rules(NET6)[0])])
    assert len(await masq.check()) == 3
    await masq.ensure()
    assert chain(ns, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4)
    assert chain(ns, "nat", "FLANNEL-POSTRTG", "ip6tables") == masq_rules(NET6)
    assert [r for r in builtin(ns, "filter", "FORWARD") if "FLANNEL-FWD" in r] == [
        '-m comment --comment "flanneld forward" -j FLANNEL-FWD'
    ]

    # Explicit cleanup only; foreign rules stay.
    await masq.cleanup()
    assert "FLANNEL" not in ns.run(["iptables-save"]).stdout
    assert "FLANNEL" not in ns.run(["ip6tables-save"]).stdout
    assert builtin(ns, "filter", "FORWARD") == ["-j REJECT --reject-with icmp-port-unreachable"]


async def test_forward_rules_alone_and_masquerade_alone(one_node: Netns) -> None:
    ns = one_node
    await IptablesMasq([NET4], RuleOptions(masquerade=False, forward=True), commands=cmds(ns)).ensure()
    assert chain(ns, "filter", "FLANNEL-FWD") == forward_rules(NET4)
    assert "FLANNEL-POSTRTG" not in ns.run(["iptables-save"]).stdout
    masq_only = IptablesMasq([NET4], RuleOptions(masquerade=True, forward=False), commands=cmds(ns))
    await masq_only.ensure()
    assert chain(ns, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4)


def fake_iptables_dir(tmp_path: Path, version: str) -> str:
    """A PATH with the real iptables-save/-restore and an ``iptables`` that reports ``version``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("iptables-save", "iptables-restore"):
        real = shutil.which(tool)
        assert real is not None
        (bin_dir / tool).symlink_to(real)
    fake = bin_dir / "iptables"
    fake.write_text(f"#!/bin/sh\necho 'iptables {version} (legacy)'\n")
    fake.chmod(0o755)
    return str(bin_dir)


async def test_random_fully_only_where_iptables_supports_it(one_node: Netns, tmp_path: Path) -> None:
    old = IptablesMasq([NET4], BOTH, commands=cmds(one_node, fake_iptables_dir(tmp_path, "v1.6.1")))
    await old.ensure()
    assert chain(one_node, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4, random_fully=False)
    new = IptablesMasq([NET4], BOTH, commands=cmds(one_node))
    await new.ensure()
    assert chain(one_node, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4, random_fully=True)
    disabled = IptablesMasq(
        [NET4], RuleOptions(masquerade=True, random_fully_disable=True), commands=cmds(one_node)
    )
    await disabled.ensure()
    assert chain(one_node, "nat", "FLANNEL-POSTRTG") == masq_rules(NET4, random_fully=False)
    assert all("random-fully" not in r for r in chain(one_node, "nat", "FLANNEL-POSTRTG"))


def nft_chain(ns: Netns, version: int, name: str) -> list[str]:
    fam, table = ("ip", "flannel-ipv4") if version == 4 else ("ip6", "flannel-ipv6")
    lines = ns.run(["nft", "list", "chain", fam, table, name]).stdout.splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().startswith(("table", "chain", "comment", "type", "}"))
    ]


async def test_nftables_mode_tables_are_flannels_and_repaired_after_drift(one_node: Netns) -> None:
    ns = one_node
    masq = NftablesMasq([NET4, NET6], BOTH, commands=cmds(ns))
    assert await masq.ensure() is True
    listing = ns.run(["nft", "list", "table", "ip", "flannel-ipv4"]).stdout
    assert 'comment "rules for flannel-ipv4"' in listing
    assert "type nat hook postrouting priority srcnat; policy accept;" in listing
    assert "type filter hook forward priority filter; policy accept;" in listing
    assert nft_chain(ns, 4, "postrtg") == nft_masq_rules(NET4)
    assert nft_chain(ns, 4, "forward") == nft_forward_rules(NET4)
    assert nft_chain(ns, 6, "postrtg") == nft_masq_rules(NET6)
    assert nft_chain(ns, 6, "forward") == nft_forward_rules(NET6)
    assert await masq.check() == []
    assert await masq.ensure() is False

    ns.run(["nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg"])
    assert await masq.check() == ["nft table flannel-ipv4 differs from what was applied"]
    assert await masq.ensure() is True
    assert ns.run(["nft", "list", "table", "ip", "flannel-ipv4"]).stdout == listing

    ns.run(["nft", "delete", "table", "ip6", "flannel-ipv6"])
    assert await masq.ensure() is True
    assert await masq.check() == []

    await masq.cleanup()
    assert "flannel" not in ns.run(["nft", "list", "tables"]).stdout


async def test_nftables_mode_without_ipv6_still_has_both_tables_and_respects_options(one_node: Netns) -> None:
    ns = one_node
    masq = NftablesMasq(
        [NET4], RuleOptions(masquerade=False, forward=True, random_fully_disable=True), commands=cmds(ns)
    )
    await masq.ensure()
    tables = ns.run(["nft", "list", "tables"]).stdout
    assert "table ip flannel-ipv4" in tables and "table ip6 flannel-ipv6" in tables
    assert "postrtg" not in ns.run(["nft", "list", "table", "ip", "flannel-ipv4"]).stdout
    assert nft_chain(ns, 4, "forward") == nft_forward_rules(NET4)
    await NftablesMasq(
        [NET4], RuleOptions(masquerade=True, random_fully_disable=True), commands=cmds(ns)
    ).ensure()
    assert nft_chain(ns, 4, "postrtg") == nft_masq_rules(NET4, random_fully=False)


async def test_each_mode_removes_the_other_modes_leftovers_at_start(one_node: Netns) -> None:
    ns = one_node
    await IptablesMasq([NET4, NET6], BOTH, commands=cmds(ns)).ensure()
    ns.run(["iptables", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT"])  # not ours: stays
    nft = TrafficRules(BOTH, nftables=True, commands=cmds(ns))
    await nft.remove_leftovers()
    assert "FLANNEL" not in ns.run(["iptables-save"]).stdout + ns.run(["ip6tables-save"]).stdout
    assert builtin(ns, "filter", "FORWARD") == ["-s 192.0.2.0/24 -j ACCEPT"]
    nft.update([NET4, NET6])
    assert await nft.ensure() is True
    assert "flannel-ipv4" in ns.run(["nft", "list", "tables"]).stdout

    ipt = TrafficRules(BOTH, nftables=False, commands=cmds(ns))
    await ipt.remove_leftovers()
    assert "flannel" not in ns.run(["nft", "list", "tables"]).stdout
    ipt.update([NET4, NET6])
    assert await ipt.ensure() is True
    assert chain(ns, "filter", "FLANNEL-FWD") == forward_rules(NET4)
    assert await remove_leftovers(True, cmds(ns)) != []  # and back: the iptables chains go


def nft_only_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "nft-only"
    bin_dir.mkdir()
    real = shutil.which("nft")
    assert real is not None
    (bin_dir / "nft").symlink_to(real)
    return str(bin_dir)


async def test_nftables_only_host_works_in_nft_mode_and_iptables_mode_says_why_not(
    one_node: Netns, tmp_path: Path
) -> None:
    ns = one_node
    path = nft_only_path(tmp_path)
    nft = TrafficRules(BOTH, nftables=True, commands=cmds(ns, path))
    nft.check_tools([4])
    await nft.remove_leftovers()  # no iptables binaries: nothing to remove, no error
    nft.update([NET4])
    await nft.ensure()
    assert nft_chain(ns, 4, "forward") == nft_forward_rules(NET4)
    ipt = TrafficRules(BOTH, nftables=False, commands=cmds(ns, path))
    with pytest.raises(
        ToolsMissing,
        match=r"iptables mode needs iptables, iptables-save, iptables-restore on "
        r"PATH; not found: .*EnableNFTables",
    ):
        ipt.check_tools([4])
    # Nothing asked for (no --ip-masq, --iptables-forward-rules=false): no tools needed.
    TrafficRules(
        RuleOptions(masquerade=False, forward=False), nftables=False, commands=cmds(ns, path)
    ).check_tools([4])


async def test_a_failing_command_is_logged_once_and_retried(
    one_node: Netns, caplog: pytest.LogCaptureFixture
) -> None:
    rules = TrafficRules(BOTH, nftables=False, commands=cmds(one_node))
    rules.update([NET4])
    assert await rules.ensure() is True
    assert await rules.ensure() is False  # in place
    rules.rules = IptablesMasq(
        [NET4], BOTH, commands=Commands(prefix=("ip", "netns", "exec", "fpt-does-not-exist"))
    )
    assert await rules.ensure() is False
    assert await rules.ensure() is False
    assert sum("cannot apply iptables rules" in r.message for r in caplog.records) == 1


async def test_blackhole_route_for_own_subnets_never_shadows_a_bridge_route(one_node: Netns) -> None:
    ns = one_node
    ns.ip("link", "add", "cni0", "type", "bridge")
    ns.ip("link", "set", "cni0", "up")
    async with AsyncIPRoute(netns=ns.name) as ipr:
        subnets = [ip_network("10.244.1.0/24"), ip_network("fd00:10:0:1::/64")]
        assert await ensure_blackholes(ipr, subnets) == subnets
        assert await ensure_blackholes(ipr, subnets) == []  # already there
        assert f"blackhole 10.244.1.0/24 proto 70 metric {BLACKHOLE_METRIC}" in ns.ip("route", "show")
        assert "blackhole fd00:10:0:1::/64" in ns.ip("-6", "route", "show")
        # The bridge gets the subnet later (as cni0 does): its route wins, the blackhole is a last resort.
        ns.ip("addr", "add", "10.244.1.1/24", "dev", "cni0")
        assert "dev cni0" in ns.ip("route", "get", "10.244.1.7")
        ns.ip("addr", "del", "10.244.1.1/24", "dev", "cni0")
        assert ns.run(["ip", "route", "get", "10.244.1.7"], check=False).returncode != 0  # dropped
        ns.ip("route", "add", "blackhole", "10.99.0.0/16")  # not ours: stays
        assert sorted(await remove_blackholes(ipr)) == ["10.244.1.0/24", "fd00:10:0:1::/64"]
        assert "blackhole 10.99.0.0/16" in ns.ip("route", "show")
        assert "10.244.1.0/24" not in ns.ip("route", "show")


async def test_the_resync_task_applies_a_new_rule_set_at_once_and_repairs_drift(one_node: Netns) -> None:
    ns = one_node
    rules = TrafficRules(BOTH, nftables=False, commands=cmds(ns))
    task = asyncio.ensure_future(rules.run_resync(3600))  # the period never comes: only update() wakes it
    try:
        rules.update([NET4])
        await async_wait_until(
            lambda: _has_chain(ns, "FLANNEL-FWD"), timeout=20, what="rules applied at once"
        )
        moved = MasqNetwork(ip_network("10.244.0.0/16"), ip_network("10.244.9.0/24"))
        rules.update([moved])  # a new own lease
        await async_wait_until(
            lambda: _chain_is(ns, "nat", "FLANNEL-POSTRTG", masq_rules(moved)),
            timeout=20,
            what="the new subnet's rules",
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _has_chain(ns: Netns, name: str) -> bool:
    return f":{name}" in ns.run(["iptables-save", "-t", "filter"]).stdout


async def _chain_is(ns: Netns, table: str, name: str, want: list[str]) -> bool:
    return (
        ns.run(["iptables", "-t", table, "-S"], check=False).returncode == 0
        and chain(ns, table, name) == want
    )
