"""flannel's FORWARD and masquerade rules (``--iptables-forward-rules``, ``--ip-masq``), iptables or nftables.

What flannel's newest release (``pkg/trafficmngr``) installs, per address family:

iptables mode (``iptables`` / ``ip6tables``; every rule carries the comment shown)::

    nat     POSTROUTING: -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG        (with --ip-masq)
            FLANNEL-POSTRTG:
              -m mark --mark 0x4000/0x4000 -j RETURN          kube-proxy marked it: no double NAT
              -s <subnet> -d <network> -j RETURN             pod to pod
              -s <network> -d <subnet> -j RETURN
              ! -s <network> -d <subnet> -j RETURN           outside to our pods keeps its source
              -s <network> ! -d 224.0.0.0/4 -j MASQUERADE [--random-fully]   pods to the world
              ! -s <network> -d <network> -j MASQUERADE [--random-fully]     host to pods
    filter  FORWARD: -m comment --comment "flanneld forward" -j FLANNEL-FWD          (--iptables-forward-rules)
            FLANNEL-FWD: -s <network> -j ACCEPT, -d <network> -j ACCEPT

(IPv6: ``ff00::/8``.) ``--random-fully`` only when the iptables binary supports it (version 1.6.2 or
later, go-iptables' test) and ``--ip-masq-fully-random-disable`` is off. Each family is written in one
``iptables-restore -w --noflush`` transaction: declaring our chain empties it and the rules refill it;
the jump is inserted at the top of the built-in chain (flannel appends it, after any trailing REJECT:
flannel issues #1033/#1619) and every older copy of it is deleted in the same transaction.

nftables mode (net-conf ``"EnableNFTables": true``): tables ``flannel-ipv4`` (``ip``) and
``flannel-ipv6`` (``ip6``), comment ``rules for <table>``, chains ``postrtg`` (nat, postrouting, srcnat)
and ``forward`` (filter, forward, filter) holding flannel's nftables rules verbatim, written by one
``nft -f`` that deletes and recreates the table.

Drift (a rule or jump missing, changed, reordered, duplicated, or a foreign rule in our chain) is
found by :meth:`Rules.check` and repaired by :meth:`Rules.ensure`; :class:`TrafficRules` runs that
every ``--iptables-resync`` seconds. Nothing here removes rules except :meth:`Rules.cleanup` and
:func:`remove_leftovers` (the other mode's rules, at start, as flannel does): a plain stop leaves
them (flannel issue #2237).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

from pyroute2.iproute.linux import AsyncIPRoute

from . import command
from .blackhole import ensure_blackholes
from .desired import IPNetwork

log = logging.getLogger(__name__)

POSTRTG_CHAIN = "FLANNEL-POSTRTG"
FORWARD_CHAIN = "FLANNEL-FWD"
MASQ_COMMENT = "flanneld masq"
FORWARD_COMMENT = "flanneld forward"
KUBE_PROXY_MARK = "0x4000/0x4000"
NFT_TABLES = {4: "flannel-ipv4", 6: "flannel-ipv6"}
NFT_FAMILIES = {4: "ip", 6: "ip6"}
NFT_POSTRTG = "postrtg"
NFT_FORWARD = "forward"
COMMAND_TIMEOUT = 30.0
"""Seconds one iptables/nft command may take (``-w`` waits for the xtables lock) before it is killed."""

POSTROUTING_JUMP = f'-m comment --comment "{MASQ_COMMENT}" -j {POSTRTG_CHAIN}'
FORWARD_JUMP = f'-m comment --comment "{FORWARD_COMMENT}" -j {FORWARD_CHAIN}'
_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)")


class MasqError(RuntimeError):
    """A rules command failed or timed out; the message has the command and its stderr."""


class ToolsMissing(MasqError):
    """The binaries a mode needs are not on the backend's PATH; the message says which and what to do."""


@dataclass(frozen=True)
class MasqNetwork:
    """One address family: the cluster network and this node's subnet in it."""

    network: IPNetwork
    subnet: IPNetwork


@dataclass(frozen=True)
class RuleOptions:
    """Which of flannel's rules are wanted, from the flags and the net-conf."""

    masquerade: bool = False
    """``--ip-masq``."""
    forward: bool = True
    """``--iptables-forward-rules`` (flannel's default: true)."""
    random_fully_disable: bool = False
    """``--ip-masq-fully-random-disable``."""

    @property
    def any(self) -> bool:
        return self.masquerade or self.forward


def _multicast(version: int) -> str:
    return "224.0.0.0/4" if version == 4 else "ff00::/8"


# --------------------------------------------------------------------------- rule text


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


def nft_masq_rules(net: MasqNetwork, *, random_fully: bool = True) -> list[str]:
    """flannel's ``postrtg`` rules as ``nft list`` prints them (flannel's nftables text, verbatim:
    its fourth rule differs from the iptables one, ``saddr != <subnet> daddr <network>``)."""
    fam = NFT_FAMILIES[net.network.version]
    n, s = net.network, net.subnet
    masq = "masquerade fully-random" if random_fully else "masquerade"
    return [
        "meta mark 0x00004000 return",
        f"{fam} saddr {s} {fam} daddr {n} return",
        f"{fam} saddr {n} {fam} daddr {s} return",
        f"{fam} saddr != {s} {fam} daddr {n} return",
        f"{fam} saddr {n} {fam} daddr != {_multicast(n.version)} {masq}",
        f"{fam} saddr != {n} {fam} daddr {n} {masq}",
    ]


def nft_forward_rules(net: MasqNetwork) -> list[str]:
    fam = NFT_FAMILIES[net.network.version]
    return [f"{fam} saddr {net.network} accept", f"{fam} daddr {net.network} accept"]


def nft_ruleset(
    version: int, net: MasqNetwork | None, options: RuleOptions, *, random_fully: bool = True
) -> str:
    """The ``nft -f`` text that atomically (re)creates our table of one family (empty when ``net`` is None)."""
    fam, table = NFT_FAMILIES[version], NFT_TABLES[version]
    lines = [
        f"table {fam} {table}",
        f"delete table {fam} {table}",
        f"table {fam} {table} {{",
        f'\tcomment "rules for {table}"',
    ]
    if net is not None and options.masquerade:
        lines += [
            f"\tchain {NFT_POSTRTG} {{",
            '\t\tcomment "chain to manage traffic masquerading by flannel"',
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        ]
        lines += [f"\t\t{rule}" for rule in nft_masq_rules(net, random_fully=random_fully)]
        lines.append("\t}")
    if net is not None and options.forward:
        lines += [
            f"\tchain {NFT_FORWARD} {{",
            '\t\tcomment "chain to accept flannel traffic"',
            "\t\ttype filter hook forward priority filter; policy accept;",
        ]
        lines += [f"\t\t{rule}" for rule in nft_forward_rules(net)]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Commands:
    """Runs iptables/nft: binaries resolved on ``path`` (default: $PATH), optionally behind a prefix
    (tests: ``ip netns exec <ns>``), each with a timeout, never blocking the event loop."""

    prefix: tuple[str, ...] = ()
    path: str | None = None
    timeout: float = COMMAND_TIMEOUT

    def find(self, names: Sequence[str]) -> dict[str, str]:
        """name -> absolute path for each binary found."""
        search = self.path if self.path is not None else os.environ.get("PATH", os.defpath)
        return {name: found for name in names if (found := shutil.which(name, path=search)) is not None}

    async def run(self, argv: Sequence[str], stdin: str | None = None, *, check: bool = True) -> str:
        """Run a command; its stdout. :class:`MasqError` with stderr when it fails (and ``check``)."""
        cmd = [*self.prefix, *argv]
        try:
            done = await command.run(
                cmd, stdin=stdin.encode() if stdin is not None else None, timeout=self.timeout
            )
        except TimeoutError:
            raise MasqError(f"{' '.join(argv)} did not finish within {self.timeout:g} s") from None
        if check and done.returncode != 0:
            raise MasqError(f"{' '.join(argv)} exited {done.returncode}: {done.err.strip()}")
        return done.out


def iptables_version(text: str) -> tuple[int, int, int] | None:
    """``iptables v1.8.9 (nf_tables)`` -> (1, 8, 9)."""
    match = _VERSION.search(text)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def supports_random_fully_and_wait(version: tuple[int, int, int] | None) -> bool:
    """``--random-fully`` and ``iptables-restore --wait`` both came with iptables 1.6.2 (go-iptables' test)."""
    return version is not None and version >= (1, 6, 2)


class Rules(Protocol):
    """Keeps flannel's rules in place."""

    async def check(self) -> list[str]:
        """Drift found, one line each; empty when the rules are as they should be."""
        ...

    async def ensure(self) -> bool:
        """Re-apply atomically if :meth:`check` finds drift; True when something was applied."""
        ...

    async def cleanup(self) -> None:
        """Remove every rule, chain and table of ours (explicit cleanup only, never on stop)."""
        ...


# --------------------------------------------------------------------------- iptables


def _parse_save(text: str) -> tuple[dict[str, list[str]], set[str]]:
    """``iptables-save`` output of one table -> rules per chain (without ``-A <chain>``) and declared chains."""
    rules: dict[str, list[str]] = {}
    chains: set[str] = set()
    for line in text.splitlines():
        if line.startswith(":"):
            chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            rules.setdefault(chain, []).append(rest[0] if rest else "")
    return rules, chains


def _targets(rule: str, chain: str) -> bool:
    """Whether an ``iptables-save`` rule jumps (``-j``) or goes (``-g``) to ``chain``."""
    words = rule.split()
    return any(w in ("-j", "-g") and nxt == chain for w, nxt in itertools.pairwise(words))


@dataclass(frozen=True)
class _Piece:
    table: str
    builtin: str
    jump: str
    chain: str
    rules: tuple[str, ...]


def _iptables_tools(version: int) -> tuple[str, str, str]:
    base = "iptables" if version == 4 else "ip6tables"
    return base, f"{base}-save", f"{base}-restore"


def required_tools(nftables: bool, versions: Sequence[int]) -> list[str]:
    """The binaries a mode needs for the address families ``versions``."""
    return ["nft"] if nftables else [t for v in versions for t in _iptables_tools(v)]


def check_tools(nftables: bool, versions: Sequence[int], commands: Commands) -> dict[str, str]:
    """name -> path of each binary the mode needs; :class:`ToolsMissing` saying what to do if any is absent."""
    wanted = required_tools(nftables, versions)
    found = commands.find(wanted)
    missing = [t for t in wanted if t not in found]
    if missing and nftables:
        raise ToolsMissing('nftables mode ("EnableNFTables": true) needs nft on PATH; it was not found')
    if missing:
        raise ToolsMissing(
            f"iptables mode needs {', '.join(wanted)} on PATH; not found: {', '.join(missing)}. Install "
            'iptables, or set "EnableNFTables": true in the network config to use nftables'
        )
    return found


@dataclass(eq=False)
class _RuleSet:
    """What both modes are given: the networks (one per address family), the rules wanted, the programs."""

    networks: Sequence[MasqNetwork]
    options: RuleOptions = RuleOptions(masquerade=True)
    _: KW_ONLY
    commands: Commands = Commands()

    @property
    def versions(self) -> list[int]:
        return [net.network.version for net in self.networks]

    def network(self, version: int) -> MasqNetwork | None:
        """The network of address family ``version``, if there is one."""
        return next((net for net in self.networks if net.network.version == version), None)


@dataclass(eq=False)
class IptablesMasq(_RuleSet):
    """flannel's iptables rules, one ``iptables-restore -w --noflush`` per family and change."""

    _tools: dict[str, str] = field(default_factory=dict, init=False)
    _random_fully: dict[int, bool] = field(default_factory=dict, init=False)
    _wait: dict[int, bool] = field(default_factory=dict, init=False)
    _bootstrapped: set[int] = field(default_factory=set, init=False)

    def require_tools(self) -> None:
        """:class:`ToolsMissing` unless every binary the enabled families need is on PATH."""
        self._tools = check_tools(False, self.versions, self.commands)

    async def probe(self) -> None:
        """Once: which families' iptables support ``--random-fully`` and ``-w`` (by version, as flannel)."""
        if not self._tools:
            self.require_tools()
        for v in self.versions:
            if v in self._random_fully:
                continue
            base = _iptables_tools(v)[0]
            text = await self.commands.run([self._tools[base], "--version"], check=False)
            supported = supports_random_fully_and_wait(iptables_version(text))
            self._wait[v] = supported
            self._random_fully[v] = supported and not self.options.random_fully_disable
            if not supported:
                log.warning("%s %s: no --random-fully and no -w (needs 1.6.2 or later)", base, text.strip())

    def random_fully(self, version: int) -> bool:
        return self._random_fully.get(version, False)

    def _pieces(self, net: MasqNetwork) -> list[_Piece]:
        out = []
        if self.options.masquerade:
            out.append(
                _Piece(
                    "nat",
                    "POSTROUTING",
                    POSTROUTING_JUMP,
                    POSTRTG_CHAIN,
                    tuple(masq_rules(net, random_fully=self.random_fully(net.network.version))),
                )
            )
        if self.options.forward:
            out.append(_Piece("filter", "FORWARD", FORWARD_JUMP, FORWARD_CHAIN, tuple(forward_rules(net))))
        return out

    async def _save(self, version: int, table: str) -> tuple[dict[str, list[str]], set[str]]:
        save = self._tools[_iptables_tools(version)[1]]
        return _parse_save(await self.commands.run([save, "-t", table]))

    async def _restore(self, version: int, text: str) -> None:
        restore = self._tools[_iptables_tools(version)[2]]
        wait = ["-w"] if self._wait.get(version) else []
        await self.commands.run([restore, *wait, "--noflush"], stdin=text)

    async def _drift(self, net: MasqNetwork) -> tuple[list[str], str]:
        """The drift of one family and the restore text that repairs it."""
        v = net.network.version
        problems: list[str] = []
        restore: list[str] = []
        for piece in self._pieces(net):
            rules, chains = await self._save(v, piece.table)
            ours_in_builtin = [r for r in rules.get(piece.builtin, []) if _targets(r, piece.chain)]
            jump_ok = ours_in_builtin == [piece.jump] and v in self._bootstrapped
            if not ours_in_builtin:
                problems.append(
                    f"IPv{v} {piece.table}: the jump from {piece.builtin} to {piece.chain} is missing"
                )
            elif ours_in_builtin != [piece.jump]:
                problems.append(
                    f"IPv{v} {piece.table}: {piece.builtin} jumps to {piece.chain} as {ours_in_builtin}"
                )
            have = rules.get(piece.chain, [])
            if piece.chain not in chains:
                problems.append(f"IPv{v} {piece.table}: chain {piece.chain} is missing")
            elif have != list(piece.rules):
                problems.append(
                    f"IPv{v} {piece.table}: chain {piece.chain} has {have}, wants {list(piece.rules)}"
                )
            restore += [f"*{piece.table}", f":{piece.chain} - [0:0]"]
            restore += [f"-A {piece.chain} {rule}" for rule in piece.rules]
            if not jump_ok:  # first apply by this process, or the jump drifted: one copy, at the top
                restore += [f"-D {piece.builtin} {rule}" for rule in ours_in_builtin]
                restore.append(f"-I {piece.builtin} 1 {piece.jump}")
            restore.append("COMMIT")
        if v not in self._bootstrapped and not problems:
            problems.append(f"IPv{v}: not applied by this process yet")
        return problems, "\n".join(restore) + "\n"

    async def check(self) -> list[str]:
        await self.probe()
        problems: list[str] = []
        for net in self.networks:
            problems += (await self._drift(net))[0]
        return problems

    async def ensure(self) -> bool:
        await self.probe()
        applied = False
        for net in self.networks:
            v = net.network.version
            problems, text = await self._drift(net)
            if problems:
                if v in self._bootstrapped:
                    log.warning("iptables rules drifted (%s); re-applying", "; ".join(problems))
                await self._restore(v, text)
                self._bootstrapped.add(v)
                applied = True
        return applied

    async def cleanup(self) -> None:
        await remove_iptables_rules(self.commands, versions=self.versions)
        self._bootstrapped.clear()


async def remove_iptables_rules(commands: Commands, versions: Sequence[int] = (4, 6)) -> list[str]:
    """Delete flannel's jumps and chains (FLANNEL-POSTRTG in nat, FLANNEL-FWD in filter), every family whose
    binaries are on PATH; what was removed, one line each. Foreign rules are left alone."""
    removed: list[str] = []
    for v in versions:
        base, save_name, restore_name = _iptables_tools(v)
        tools = commands.find([save_name, restore_name])
        if len(tools) < 2:
            log.debug("no %s/%s on PATH: no IPv%d iptables rules to remove", save_name, restore_name, v)
            continue
        lines: list[str] = []
        for table, builtin, chain in (
            ("nat", "POSTROUTING", POSTRTG_CHAIN),
            ("filter", "FORWARD", FORWARD_CHAIN),
        ):
            rules, chains = _parse_save(await commands.run([tools[save_name], "-t", table], check=False))
            jumps = [r for r in rules.get(builtin, []) if _targets(r, chain)]
            if not jumps and chain not in chains:
                continue
            lines.append(f"*{table}")
            lines += [f"-D {builtin} {rule}" for rule in jumps]
            if chain in chains:
                lines += [f"-F {chain}", f"-X {chain}"]
            lines.append("COMMIT")
            removed.append(
                f"{base} -t {table}: {len(jumps)} jump(s) from {builtin}"
                + (f", chain {chain}" if chain in chains else "")
            )
        if lines:
            await commands.run([tools[restore_name], "--noflush"], stdin="\n".join(lines) + "\n")
    return removed


# --------------------------------------------------------------------------- nftables


@dataclass(eq=False)
class NftablesMasq(_RuleSet):
    """flannel's nftables mode: tables ``flannel-ipv4`` / ``flannel-ipv6`` replaced in one ``nft -f`` each.

    Both tables exist in this mode (flannel creates both at start); a family without a network is empty.
    Drift is found by comparing ``nft list table`` with the listing right after our last apply.
    """

    _nft: str = field(default="", init=False)
    _random_fully: bool | None = field(default=None, init=False)
    _applied: dict[int, str] = field(default_factory=dict, init=False)

    def require_tools(self) -> None:
        self._nft = check_tools(True, [], self.commands)["nft"]

    async def probe(self) -> None:
        """Once: does the kernel take ``masquerade fully-random`` (flannel checks a test chain with ``nft -c``)."""
        if not self._nft:
            self.require_tools()
        if self._random_fully is not None:
            return
        test = (
            "table ip flannel-ipv4 {\n\tchain masqueradeTest {\n\t\ttype nat hook postrouting priority srcnat;"
            "\n\t\tip saddr != 127.0.0.1 masquerade fully-random\n\t}\n}\n"
        )
        try:
            await self.commands.run([self._nft, "-c", "-f", "-"], stdin=test)
            supported = True
        except MasqError as exc:
            log.warning("nftables: masquerade fully-random unsupported (%s)", exc)
            supported = False
        self._random_fully = supported and not self.options.random_fully_disable

    @property
    def random_fully(self) -> bool:
        return bool(self._random_fully)

    async def _listing(self, version: int) -> str | None:
        try:
            return await self.commands.run(
                [self._nft, "list", "table", NFT_FAMILIES[version], NFT_TABLES[version]]
            )
        except MasqError:
            return None

    async def check(self) -> list[str]:
        await self.probe()
        problems = []
        for v in (4, 6):
            listing = await self._listing(v)
            if listing is None:
                problems.append(f"nft table {NFT_TABLES[v]} is missing")
            elif v not in self._applied:
                problems.append(f"nft table {NFT_TABLES[v]} was not applied by this process yet")
            elif listing != self._applied[v]:
                problems.append(f"nft table {NFT_TABLES[v]} differs from what was applied")
        return problems

    async def ensure(self) -> bool:
        problems = await self.check()
        if not problems:
            return False
        if self._applied:
            log.warning("nftables rules drifted (%s); re-applying", "; ".join(problems))
        for v in (4, 6):
            text = nft_ruleset(v, self.network(v), self.options, random_fully=self.random_fully)
            await self.commands.run([self._nft, "-f", "-"], stdin=text)
            listing = await self._listing(v)
            if listing is not None:
                self._applied[v] = listing
        return True

    async def cleanup(self) -> None:
        await remove_nft_tables(self.commands)
        self._applied.clear()


async def remove_nft_tables(commands: Commands) -> list[str]:
    """Delete tables flannel-ipv4 and flannel-ipv6 when ``nft`` is on PATH; what was removed."""
    found = commands.find(["nft"])
    if "nft" not in found:
        log.debug("no nft on PATH: no nftables tables to remove")
        return []
    removed = []
    for v in (4, 6):
        fam, table = NFT_FAMILIES[v], NFT_TABLES[v]
        listing = await commands.run([found["nft"], "list", "table", fam, table], check=False)
        if listing.strip():
            await commands.run([found["nft"], "delete", "table", fam, table])
            removed.append(f"nft table {fam} {table}")
    return removed


async def remove_leftovers(nftables: bool, commands: Commands) -> list[str]:
    """At start, as flannel does: remove the rules of the mode NOT in use (iptables chains in nftables mode,
    nftables tables in iptables mode). A mode whose binaries are absent has nothing to remove."""
    if nftables:
        return await remove_iptables_rules(commands)
    return await remove_nft_tables(commands)


async def cleanup_all(commands: Commands = Commands()) -> list[str]:
    """Remove every rule, chain and table flannel-py (or flannel) makes, in both modes; what was removed.
    For ``flanneld cleanup``; never called on a plain stop."""
    return [*await remove_iptables_rules(commands), *await remove_nft_tables(commands)]


# --------------------------------------------------------------------------- the backend's owner


@dataclass
class TrafficRules:
    """The backend's rules: built from the node's lease, ensured at once and every resync period.

    ``update(networks)`` (a new own lease) replaces the rule set; ``run_resync(period)`` is the one task
    that re-checks it. Errors are logged once per distinct message and retried next period.
    """

    options: RuleOptions
    nftables: bool
    commands: Commands = field(default_factory=Commands)
    blackhole_ipr: AsyncIPRoute | None = None
    """With ``--ip-blackhole-route``: the netlink handle that keeps a blackhole route for each own subnet."""
    rules: Rules | None = None
    subnets: tuple[IPNetwork, ...] = ()
    _last_error: str = ""
    _last_blackhole_error: str = ""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def make(self, networks: Sequence[MasqNetwork]) -> Rules:
        cls = NftablesMasq if self.nftables else IptablesMasq
        return cls(networks, self.options, commands=self.commands)

    @property
    def wanted(self) -> bool:
        """Whether this node keeps rules at all (nftables mode always has its two tables, as flannel)."""
        return self.options.any or self.nftables

    def check_tools(self, versions: Sequence[int]) -> None:
        """:class:`ToolsMissing`, naming what is missing, unless the binaries the mode needs for ``versions``
        (the enabled address families) are on PATH. Cheap: call it at start, before anything else."""
        if self.wanted:
            check_tools(self.nftables, versions, self.commands)

    async def remove_leftovers(self) -> None:
        """Remove the other mode's rules (flannel does it at start)."""
        try:
            for line in await remove_leftovers(self.nftables, self.commands):
                log.info("removed %s (left by the other rules mode)", line)
        except MasqError as exc:
            log.warning("cannot remove the other rules mode's leftovers: %s", exc)

    def update(self, networks: Sequence[MasqNetwork]) -> None:
        """A new own lease: rules (and blackhole routes) for ``networks``; the resync task applies them at once."""
        self.subnets = tuple(net.subnet for net in networks)
        if self.wanted:
            self.rules = self.make(networks)
        self._wake.set()

    async def ensure(self) -> bool:
        """Repair what drifted; True when rules were (re)applied. Failures are logged once each."""
        await self._ensure_blackholes()
        async with self._lock:
            if self.rules is None:
                return False
            try:
                applied = await self.rules.ensure()
            except MasqError as exc:
                if str(exc) != self._last_error:
                    log.error("cannot apply %s rules: %s", "nftables" if self.nftables else "iptables", exc)
                    self._last_error = str(exc)
                return False
        if self._last_error:
            log.info("%s rules applied again", "nftables" if self.nftables else "iptables")
            self._last_error = ""
        return applied

    async def _ensure_blackholes(self) -> None:
        if self.blackhole_ipr is None or not self.subnets:
            return
        try:
            await ensure_blackholes(self.blackhole_ipr, self.subnets)
        except Exception as exc:  # noqa: BLE001 - the kernel refused: say it once, retry next period
            if str(exc) != self._last_blackhole_error:
                log.error("cannot add the blackhole route(s) %s: %s", ", ".join(map(str, self.subnets)), exc)
                self._last_blackhole_error = str(exc)
            return
        self._last_blackhole_error = ""

    async def run_resync(self, period: float) -> None:
        """The one task that keeps the rules: removes the other mode's leftovers, then applies a new rule set
        as soon as :meth:`update` gives one, and every ``period`` seconds repairs what drifted."""
        await self.remove_leftovers()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._wake.wait()
            self._wake.clear()
            await self.ensure()
