"""Network namespace helpers for tests: create namespaces, join them with veth pairs, run
commands inside, and always clean up. Names start with ``fpt-`` plus a random suffix, so that
parallel test workers never collide and leftovers are easy to spot. Nothing here touches the
host's own network: veth pairs are created inside a namespace and moved straight to the other.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace ``name`` (``setns(2)``). A process that calls it from its
    main thread before starting any other thread moves whole; otherwise only the caller moves."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a fresh thread that entered network namespace ``ns``; sockets it opens and
    processes it starts live there. The calling thread's namespace is left alone."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(ns)
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def unique_name(prefix: str = "fpt") -> str:
    """``fpt-<8 hex>``: unique enough for parallel workers, short enough for an ifname."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Netns:
    """A named network namespace created by the tests."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @property
    def exec_prefix(self) -> list[str]:
        """``ip netns exec <name>``, to run a command inside."""
        return ["ip", "netns", "exec", self.name]

    def run(
        self, argv: str | Sequence[str], *, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside (a string is split on spaces); raise with its output when it fails."""
        args = argv.split() if isinstance(argv, str) else list(argv)
        proc = subprocess.run(
            [*self.exec_prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in netns {self.name}: {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def ip(self, *args: str, check: bool = True) -> str:
        """``ip <args>`` inside; its stdout."""
        return self.run(["ip", *args], check=check).stdout

    def ping(self, dst: str, *, src: str | None = None, count: int = 1, timeout_s: int = 2) -> bool:
        """True when ``dst`` answers ``count`` pings (from ``src`` when given)."""
        argv = ["ping", "-n", "-c", str(count), "-W", str(timeout_s)]
        if src:
            argv += ["-I", src]
        return self.run([*argv, dst], check=False).returncode == 0


def create_netns(name: str | None = None) -> Netns:
    """Create a namespace with ``lo`` up."""
    ns = Netns(name or unique_name())
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
    ns.ip("link", "set", "lo", "up")
    return ns


def delete_netns(ns: Netns | str) -> None:
    """Delete a namespace (and every device in it); no error if it is already gone."""
    name = ns.name if isinstance(ns, Netns) else ns
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


LEFTOVER_AGE = 3600.0
"""A test or bench namespace this old (seconds) with nothing running in it was left by a run that was
killed before its clean-up: no test or bench lasts this long."""


def sweep_leftovers(
    prefixes: Sequence[str] = ("fpt", "fpb"), *, older_than: float = LEFTOVER_AGE
) -> list[str]:
    """Delete the namespaces named ``<prefix>-...`` that are older than ``older_than`` seconds and hold
    no process (a hard-killed run's leftovers); the names deleted. Younger ones may belong to a run going
    on beside this one and are left alone."""
    swept = []
    now = time.time()
    for entry in sorted(Path("/var/run/netns").glob("*")) if Path("/var/run/netns").is_dir() else ():
        if not entry.name.startswith(tuple(f"{p}-" for p in prefixes)):
            continue
        try:
            age = now - entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if age < older_than:
            continue
        pids = subprocess.run(
            ["ip", "netns", "pids", entry.name], check=False, capture_output=True, text=True
        )
        if pids.returncode != 0 or pids.stdout.strip():
            continue
        delete_netns(entry.name)
        swept.append(entry.name)
    return swept


@contextmanager
def netns(name: str | None = None) -> Iterator[Netns]:
    """A namespace for the duration of a ``with`` block, deleted even when the block fails."""
    ns = create_netns(name)
    try:
        yield ns
    finally:
        delete_netns(ns)


def veth_pair(
    a: Netns,
    a_ifname: str,
    b: Netns,
    b_ifname: str,
    *,
    a_addr: str | None = None,
    b_addr: str | None = None,
    mtu: int | None = None,
) -> None:
    """Join ``a`` and ``b`` with a veth pair (created inside ``a``, its peer moved into ``b``), both up.

    ``a_addr``/``b_addr`` are CIDRs (``192.168.77.1/24``) to assign.
    """
    extra = ["mtu", str(mtu)] if mtu else []
    a.ip("link", "add", a_ifname, *extra, "type", "veth", "peer", "name", b_ifname, *extra, "netns", b.name)
    for ns, ifname, addr in ((a, a_ifname, a_addr), (b, b_ifname, b_addr)):
        if addr:
            ns.ip("addr", "add", addr, "dev", ifname, *(["nodad"] if ":" in addr else []))
        ns.ip("link", "set", ifname, "up")


def local_veth(ns: Netns, ifname: str, peer_ifname: str, *, addr: str | None = None) -> None:
    """A veth pair with both ends inside ``ns``, up (a stand-in for a pod-facing device)."""
    ns.ip("link", "add", ifname, "type", "veth", "peer", "name", peer_ifname)
    if addr:
        ns.ip("addr", "add", addr, "dev", ifname, *(["nodad"] if ":" in addr else []))
    ns.ip("link", "set", ifname, "up")
    ns.ip("link", "set", peer_ifname, "up")
