"""Namespaces for the backend's kernel tests: two "nodes" joined by a veth underlay.

Node n (1 or 2) has ``eth0`` = 192.168.77.<n>/24 (and fd77::<n>/64), and a pod-facing veth
``pod0`` holding 10.244.<n>.1/24 (and fd00:10:0:<n>::1/64), standing in for a pod. Everything is
deleted afterwards, even when the test fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flannel_testkit.netns import Netns, create_netns, delete_netns, local_veth, veth_pair


@dataclass
class TwoNodes:
    a: Netns
    b: Netns

    def node(self, n: int) -> Netns:
        return self.a if n == 1 else self.b


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def two_nodes() -> Iterator[TwoNodes]:
    """Two node namespaces on one L2 underlay, each with a pod address."""
    _require_root()
    made: list[Netns] = []
    try:
        a = create_netns()
        made.append(a)
        b = create_netns()
        made.append(b)
        veth_pair(a, "eth0", b, "eth0", a_addr="192.168.77.1/24", b_addr="192.168.77.2/24")
        for n, ns in ((1, a), (2, b)):
            ns.ip("addr", "add", f"fd77::{n}/64", "dev", "eth0", "nodad")
            local_veth(ns, "pod0", "pod0p", addr=f"10.244.{n}.1/24")
            ns.ip("addr", "add", f"fd00:10:0:{n}::1/64", "dev", "pod0", "nodad")
        yield TwoNodes(a, b)
    finally:
        for ns in made:
            delete_netns(ns)


@pytest.fixture
def one_node() -> Iterator[Netns]:
    """A single namespace (for masquerade rules)."""
    _require_root()
    ns = create_netns()
    try:
        yield ns
    finally:
        delete_netns(ns)
