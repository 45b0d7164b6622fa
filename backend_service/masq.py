"""Masquerade and forward rules (``--ip-masq``), with flannel's chain names and rules.

iptables mode (flannel's default), per address family (``iptables`` / ``ip6tables``)::

    nat:     -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
             FLANNEL-POSTRTG:
               -m mark --mark 0x4000/0x4000 ... -j RETURN        (kube-proxy marked: no double NAT)
               -s <subnet>  -d <network> ... -j RETURN           (pod to pod: no NAT)
               -s <network> -d <subnet>  ... -j RETURN
               ! -s <network> -d <subnet> ... -j RETURN          (external traffic to our pods)
               -s <network> ! -d 224.0.0.0/4 ... -j MASQUERADE --random-fully   (pods to the world)
               ! -s <network> -d <network> ... -j MASQUERADE --random-fully     (host to pods)
    filter:  -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
             FLANNEL-FWD: -s <network> -j ACCEPT, -d <network> -j ACCEPT

(IPv6 uses ff00::/8 for multicast.) Applied atomically with ``iptables-restore --noflush``: the
restore declares our chains, which flushes and refills them in one transaction, and adds a jump
only when it is missing. nftables mode writes tables ``flannel-ipv4`` / ``flannel-ipv6`` with chains
``postrtg`` and ``forward`` in one ``nft -f`` transaction.

:meth:`Masquerade.check` reports drift (a rule or jump deleted or changed), :meth:`Masquerade.ensure`
re-applies when there is any. Nothing here removes rules except :meth:`Masquerade.cleanup`, which
only an explicit cleanup command should call: a plain stop leaves them (flannel issue #2237).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .desired import IPNetwork

log = logging.getLogger(__name__)

POSTRTG_CHAIN = "FLANNEL-POSTRTG"
FORWARD_CHAIN = "FLANNEL-FWD"
MASQ_COMMENT = "flanneld masq"
FORWARD_COMMENT = "flanneld forward"
KUBE_PROXY_MARK = "0x4000/0x4000"
NFT_TABLES = {4: "flannel-ipv4", 6: "flannel-ipv6"}


class MasqError(RuntimeError):
    """A rules command failed; the message has the command and its stderr."""


@dataclass(frozen=True)
class MasqNetwork:
    """One address family: the cluster network and this node's subnet in it."""

    network: IPNetwork
    subnet: IPNetwork


def _multicast(version: int) -> str:
    return "224.0.0.0/4" if version == 4 else "ff00::/8"


def masq_rules(net: MasqNetwork, *, random_fully: bool = True) -> list[str]:
    """The FLANNEL-POSTRTG rules, exactly as ``iptables-save`` prints them (without ``-A <chain>``)."""
    n, s = net.network, net.subnet
    c = f'-m comment --comment "{MASQ_COMMENT}"'
    masq = "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"
    return [
        f"-m mark --mark {KUBE_PROXY_MARK} {c} -j RETURN",
        f"-s {s} -d {n} {c} -j RETURN",
        f"-s {n} -d {s} {c} -j RETURN",
        f"! -s {n} -d {s} {c} -j RETURN",
        f"-s {n} ! -d {_multicast(n.version)} {c} {masq}",
        f"! -s {n} -d {n} {c} {masq}",
    ]


def forward_rules(net: MasqNetwork) -> list[str]:
    """The FLANNEL-FWD rules, as ``iptables-save`` prints them."""
    c = f'-m comment --comment "{FORWARD_COMMENT}"'
    return [f"-s {net.network} {c} -j ACCEPT", f"-d {net.network} {c} -j ACCEPT"]


POSTROUTING_JUMP = f'-m comment --comment "{MASQ_COMMENT}" -j {POSTRTG_CHAIN}'
FORWARD_JUMP = f'-m comment --comment "{FORWARD_COMMENT}" -j {FORWARD_CHAIN}'


async def run(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a command; its stdout, or :class:`MasqError` with stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise MasqError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode().strip()}")
    return out.decode()


class Masquerade(Protocol):
    """Keeps flannel's masquerade/forward rules in place."""

    async def check(self) -> list[str]:
        """Drift found, one line each; empty when the rules are as they should be."""
        ...

    async def ensure(self) -> bool:
        """Re-apply atomically if :meth:`check` finds drift; True when something was applied."""
        ...

    async def cleanup(self) -> None:
        """Remove every rule and chain/table of ours (explicit cleanup only, never on stop)."""
        ...


def _parse_save(text: str) -> tuple[dict[str, list[str]], set[str]]:
    """``iptables-save`` output → rules per chain (without ``-A <chain>``) and declared chains."""
    rules: dict[str, list[str]] = {}
    chains: set[str] = set()
    for line in text.splitlines():
        if line.startswith(":"):
            chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            rules.setdefault(chain, []).append(rest[0] if rest else "")
    return rules, chains


class IptablesMasq:
    """flannel's rules through ``iptables-restore --noflush`` (``ip6tables`` for IPv6)."""

    def __init__(
        self,
        networks: Sequence[MasqNetwork],
        *,
        masquerade: bool = True,
        forward: bool = True,
        random_fully: bool = True,
        command_prefix: Sequence[str] = (),
    ) -> None:
        """``command_prefix`` runs every command through e.g. ``ip netns exec <ns>`` (tests)."""
        self.networks = list(networks)
        self.masquerade = masquerade
        self.forward = forward
        self.random_fully = random_fully
        self.prefix = list(command_prefix)

    def _tool(self, version: int, what: str) -> list[str]:
        return [*self.prefix, f"{'iptables' if version == 4 else 'ip6tables'}-{what}"]

    def _tables(self, net: MasqNetwork) -> list[tuple[str, str, str, str, list[str]]]:
        """(table, builtin chain, jump, our chain, our rules) for what is enabled."""
        out = []
        if self.masquerade:
            out.append(
                (
                    "nat",
                    "POSTROUTING",
                    POSTROUTING_JUMP,
                    POSTRTG_CHAIN,
                    masq_rules(net, random_fully=self.random_fully),
                )
            )
        if self.forward:
            out.append(("filter", "FORWARD", FORWARD_JUMP, FORWARD_CHAIN, forward_rules(net)))
        return out

    async def _drift(self, net: MasqNetwork) -> tuple[list[str], str]:
        problems: list[str] = []
        restore: list[str] = []
        v = net.network.version
        for table, builtin, jump, chain, want in self._tables(net):
            rules, chains = _parse_save(await run([*self._tool(v, "save"), "-t", table]))
            missing_jump = jump not in rules.get(builtin, [])
            have = rules.get(chain, [])
            if missing_jump:
                problems.append(f"IPv{v} {table}: jump from {builtin} to {chain} is missing")
            if chain not in chains:
                problems.append(f"IPv{v} {table}: chain {chain} is missing")
            elif have != want:
                problems.append(f"IPv{v} {table}: chain {chain} differs: has {have}, wants {want}")
            restore += [f"*{table}", f":{chain} - [0:0]"]
            restore += [f"-A {chain} {rule}" for rule in want]
            if missing_jump:
                restore.append(f"-A {builtin} {jump}")
            restore.append("COMMIT")
        return problems, "\n".join(restore) + "\n"

    async def check(self) -> list[str]:
        problems: list[str] = []
        for net in self.networks:
            problems += (await self._drift(net))[0]
        return problems

    async def ensure(self) -> bool:
        applied = False
        for net in self.networks:
            problems, text = await self._drift(net)
            if problems:
                log.info("masquerade rules: %s; re-applying", "; ".join(problems))
                await run([*self._tool(net.network.version, "restore"), "--noflush"], stdin=text)
                applied = True
        return applied

    async def cleanup(self) -> None:
        for net in self.networks:
            v = net.network.version
            binary = [*self.prefix, "iptables" if v == 4 else "ip6tables"]
            for table, builtin, jump, chain, _ in self._tables(net):
                rules, chains = _parse_save(await run([*self._tool(v, "save"), "-t", table]))
                for _ in range(rules.get(builtin, []).count(jump)):
                    await run([*binary, "-t", table, "-D", builtin, *shlex.split(jump)])
                if chain in chains:
                    await run([*binary, "-t", table, "-F", chain])
                    await run([*binary, "-t", table, "-X", chain])


def nft_ruleset(
    net: MasqNetwork, *, masquerade: bool = True, forward: bool = True, random_fully: bool = True
) -> str:
    """The ``nft -f`` text that atomically (re)creates our table for one family."""
    v = net.network.version
    fam = "ip" if v == 4 else "ip6"
    table = NFT_TABLES[v]
    n, s = net.network, net.subnet
    masq = "masquerade fully-random" if random_fully else "masquerade"
    lines = [
        f"table {fam} {table}",
        f"delete table {fam} {table}",
        f"table {fam} {table} {{",
        f'\tcomment "rules for {table}"',
    ]
    if masquerade:
        lines += [
            "\tchain postrtg {",
            '\t\tcomment "chain to manage traffic masquerading by flannel"',
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            "\t\tmeta mark & 0x00004000 == 0x00004000 return",
            f"\t\t{fam} saddr {s} {fam} daddr {n} return",
            f"\t\t{fam} saddr {n} {fam} daddr {s} return",
            f"\t\t{fam} saddr != {n} {fam} daddr {s} return",
            f"\t\t{fam} saddr {n} {fam} daddr != {_multicast(v)} {masq}",
            f"\t\t{fam} saddr != {n} {fam} daddr {n} {masq}",
            "\t}",
        ]
    if forward:
        lines += [
            "\tchain forward {",
            '\t\tcomment "chain to accept flannel traffic"',
            "\t\ttype filter hook forward priority filter; policy accept;",
            f"\t\t{fam} saddr {n} accept",
            f"\t\t{fam} daddr {n} accept",
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class NftablesMasq:
    """flannel's nftables mode: tables ``flannel-ipv4`` / ``flannel-ipv6`` replaced in one ``nft -f``.

    Drift is detected by comparing ``nft list table`` with the listing right after our last apply.
    """

    def __init__(
        self,
        networks: Sequence[MasqNetwork],
        *,
        masquerade: bool = True,
        forward: bool = True,
        random_fully: bool = True,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.networks = list(networks)
        self.masquerade = masquerade
        self.forward = forward
        self.random_fully = random_fully
        self.prefix = list(command_prefix)
        self._applied: dict[int, str] = {}

    async def _listing(self, version: int) -> str | None:
        fam = "ip" if version == 4 else "ip6"
        try:
            return await run([*self.prefix, "nft", "list", "table", fam, NFT_TABLES[version]])
        except MasqError:
            return None

    async def check(self) -> list[str]:
        problems = []
        for net in self.networks:
            v = net.network.version
            listing = await self._listing(v)
            if listing is None:
                problems.append(f"nft table {NFT_TABLES[v]} is missing")
            elif v not in self._applied:
                problems.append(f"nft table {NFT_TABLES[v]} was not applied by this process yet")
            elif listing != self._applied[v]:
                problems.append(f"nft table {NFT_TABLES[v]} differs from what was applied")
        return problems

    async def ensure(self) -> bool:
        if not await self.check():
            return False
        for net in self.networks:
            text = nft_ruleset(
                net, masquerade=self.masquerade, forward=self.forward, random_fully=self.random_fully
            )
            await run([*self.prefix, "nft", "-f", "-"], stdin=text)
            listing = await self._listing(net.network.version)
            if listing is not None:
                self._applied[net.network.version] = listing
        return True

    async def cleanup(self) -> None:
        for net in self.networks:
            v = net.network.version
            if await self._listing(v) is not None:
                await run([*self.prefix, "nft", "delete", "table", "ip" if v == 4 else "ip6", NFT_TABLES[v]])
            self._applied.pop(v, None)
