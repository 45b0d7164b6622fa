"""flannel's masquerade and forward rules, as text (kernel tests are in test_masq_kernel.py)."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network
from pathlib import Path

from backend_service.masq import (
    Commands,
    MasqNetwork,
    RuleOptions,
    TrafficRules,
    forward_rules,
    iptables_version,
    masq_rules,
    nft_masq_rules,
    nft_ruleset,
    supports_random_fully_and_wait,
)
from flannel_testkit.wait import async_wait_until

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


def test_nft_masquerade_rules_are_flannels_verbatim() -> None:
    assert nft_masq_rules(NET6, random_fully=False) == [
        "meta mark 0x00004000 return",
        "ip6 saddr fd00:10:0:1::/64 ip6 daddr fd00:10::/56 return",
        "ip6 saddr fd00:10::/56 ip6 daddr fd00:10:0:1::/64 return",
        "ip6 saddr != fd00:10:0:1::/64 ip6 daddr fd00:10::/56 return",
        "ip6 saddr fd00:10::/56 ip6 daddr != ff00::/8 masquerade",
        "ip6 saddr != fd00:10::/56 ip6 daddr fd00:10::/56 masquerade",
    ]


def test_nft_ruleset_replaces_its_own_table_atomically() -> None:
    text = nft_ruleset(4, NET4, RuleOptions(masquerade=True, forward=True))
    lines = text.splitlines()
    assert lines[:4] == [
        "table ip flannel-ipv4",
        "delete table ip flannel-ipv4",
        "table ip flannel-ipv4 {",
        '\tcomment "rules for flannel-ipv4"',
    ]
    assert "\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random" in lines
    assert "\tchain forward {" in lines
    assert "chain" not in nft_ruleset(6, None, RuleOptions(masquerade=True))
    assert "postrtg" not in nft_ruleset(4, NET4, RuleOptions(masquerade=False, forward=True))


def test_random_fully_and_wait_need_iptables_1_6_2() -> None:
    assert iptables_version("iptables v1.8.9 (nf_tables)") == (1, 8, 9)
    assert iptables_version("ip6tables-legacy v1.6.1") == (1, 6, 1)
    assert iptables_version("garbage") is None
    assert supports_random_fully_and_wait((1, 6, 2))
    assert not supports_random_fully_and_wait((1, 6, 1))
    assert not supports_random_fully_and_wait(None)


async def test_the_rules_task_ends_when_cancelled_just_as_a_new_lease_woke_it(tmp_path: Path) -> None:
    # A SIGTERM right after the own lease was adopted cancelled this task between its wake-up and its
    # resumption: Python 3.11's asyncio.wait_for then dropped the cancellation and the task waited a whole
    # resync period, so flanneld had to SIGKILL the backend.
    rules = TrafficRules(
        RuleOptions(masquerade=False, forward=False),
        nftables=False,
        commands=Commands(path=str(tmp_path)),  # no binaries: nothing to run
    )
    ensured = 0
    ensure = rules.ensure

    async def counted() -> bool:
        nonlocal ensured
        done = await ensure()
        ensured += 1  # and, in the same step, the task goes back to waiting for the next wake-up
        return done

    rules.ensure = counted  # type: ignore[method-assign]
    task = asyncio.create_task(rules.run_resync(period=3600))
    rules.update([])
    await async_wait_until(lambda: asyncio.sleep(0, ensured == 1), what="the first ensure")
    rules.update([])
    await asyncio.sleep(0)  # the wake-up is delivered (wait_for's inner task ended, wait_for not resumed)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)
    assert task in done and task.cancelled()
