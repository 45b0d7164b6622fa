"""The template applier and the raw-dump reader see and program exactly what the pyroute2 paths do."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import ip_address, ip_network

import pytest
from pyroute2 import AsyncIPRoute

from backend_service.desired import FdbEntry, Neighbour, Route
from backend_service.kernel.apply import NetlinkKernel, TemplateApplier
from backend_service.kernel.model import (
    DELETE,
    REPLACE,
    Expected,
    KernelState,
    Op,
    identity_print,
)
from backend_service.kernel.read import read_kernel
from backend_service.planner import Planner
from flannel_testkit.wait import wait_until

from .conftest import TwoNodes
from .factory import config
from .kernelnode import node_pair, reconcile_full
from .oracles import PyrouteApplier, read_kernel_pyroute2

pytestmark = pytest.mark.netns

DEV = "flannel.1"


def peer_ops(count: int, *, ipv6: bool = False) -> list[Op]:
    """What the diff asks for ``count`` new vxlan peers: FDB entries, neighbours, then routes."""
    fdb, neigh, routes = [], [], []
    for i in range(count):
        mac = f"0a:58:00:00:{i >> 8:02x}:{i & 0xFF:02x}"
        if ipv6:
            subnet, public = ip_network(f"fd00:20:0:{i:x}::/64"), ip_address(f"fd77::1:{i:x}")
            dev = "flannel-v6.1"
        else:
            subnet, public = (
                ip_network(f"10.100.{i >> 8}.{i & 0xFF}/32"),
                ip_address(f"172.16.{i >> 8}.{i & 0xFF}"),
            )
            subnet = ip_network(f"10.{100 + (i >> 8)}.{i & 0xFF}.0/24")
            dev = DEV
        gw = subnet.network_address
        fdb.append(Op(REPLACE, FdbEntry(dev, mac, public)))
        neigh.append(Op(REPLACE, Neighbour(dev, gw, mac)))
        routes.append(Op(REPLACE, Route(subnet, gw, dev, onlink=True)))
    return fdb + neigh + routes


def as_deletes(ops: list[Op]) -> list[Op]:
    """The reverse: routes, then neighbours, then FDB entries, deleted."""
    return [Op(DELETE, op.obj) for op in reversed(ops)]


async def test_raw_reader_reads_what_pyroute2_reads(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    async with node_pair(ns.name, two_nodes.b.name, config("vxlan", ipv6=True)) as (a, _):
        assert a.ipr is not None
        ns.ip(
            "route", "add", "10.99.0.0/24", "via", "192.168.77.9", "dev", "eth0", "metric", "7", "proto", "70"
        )
        ns.ip("route", "add", "10.98.0.0/24", "dev", DEV, "proto", "static")  # on our device: ours
        ns.ip("route", "add", "10.97.0.0/24", "via", "192.168.77.9", "dev", "eth0")  # not ours, not connected
        await TemplateApplier(a.ipr).apply(peer_ops(300))
        fast = await read_kernel(a.ipr, (DEV, "flannel-v6.1"))
        slow = await read_kernel_pyroute2(a.ipr, (DEV, "flannel-v6.1"))
        assert fast == slow
        assert sorted(map(str, fast.state.routes)) == sorted(map(str, slow.state.routes))
        assert len(fast.state.routes) == 300 + 2 + 2  # the peers, node 2 (v4, v6), 10.99 and 10.98
        assert {c.network for c in fast.connected} >= {
            ip_network("192.168.77.0/24"),
            ip_network("10.244.1.0/24"),
        }


async def test_a_read_that_expects_objects_builds_only_what_differs_and_notes_every_identity(
    two_nodes: TwoNodes,
) -> None:
    ns = two_nodes.a
    async with node_pair(ns.name, two_nodes.b.name, config("vxlan", ipv6=True)) as (a, _):
        assert a.ipr is not None
        ops = peer_ops(50) + peer_ops(20, ipv6=True)
        await TemplateApplier(a.ipr).apply(ops)
        devices = (DEV, "flannel-v6.1")
        whole = await read_kernel(a.ipr, devices)
        held = list(whole.state.objects())
        changed = next(obj for obj in held if isinstance(obj, Neighbour))
        expected = [obj for obj in held if obj != changed]
        expected.append(dataclasses.replace(changed, lladdr="0a:00:00:00:00:99"))  # not what the kernel holds
        expect = Expected(expected, whole.connected, deletes=True, identities=False)
        filtered = await read_kernel(a.ipr, devices, expect)
        assert list(filtered.state.objects()) == [changed] and filtered.connected == whole.connected
        assert expect.found == len(held) - 1
        before_synced = Expected(expected, whole.connected, deletes=False, identities=True)
        nothing = await read_kernel(a.ipr, devices, before_synced)
        assert list(nothing.state.objects()) == []
        assert before_synced.identities is not None
        assert sorted(before_synced.identities) == sorted(hash(identity_print(obj)) for obj in held)


async def test_template_applier_programs_what_pyroute2_programs_and_is_idempotent(
    two_nodes: TwoNodes,
) -> None:
    cfg = config("vxlan", ipv6=True)
    devices = (DEV, "flannel-v6.1")
    async with node_pair(two_nodes.a.name, two_nodes.b.name, cfg) as (a, b):
        assert a.ipr is not None and b.ipr is not None
        ops = peer_ops(400) + peer_ops(50, ipv6=True)
        fast = await TemplateApplier(a.ipr).apply(ops)
        slow = await PyrouteApplier(b.ipr).apply(ops)
        assert fast.ok and slow.ok and fast.applied == len(ops)
        fast_state = (await read_kernel(a.ipr, devices)).state
        slow_state = (await read_kernel(b.ipr, devices)).state

        # Apart from each node's peer (the other node), both kernels hold the same objects.
        def peers_only(state: KernelState) -> tuple[set[str], set[str], set[str]]:
            node_nets = (ip_network("10.244.0.0/16"), ip_network("fd00:10::/56"))
            node_publics = (ip_network("192.168.77.0/24"), ip_network("fd77::/64"))
            outside = lambda addr, nets: not any(addr in net for net in nets if addr.version == net.version)
            return (
                {str(kr.route) for kr in state.routes if outside(kr.route.dst.network_address, node_nets)},
                {str(n) for n in state.neighbours if outside(n.dst, node_nets)},
                {str(e) for e in state.fdb if outside(e.dst, node_publics)},
            )

        fast_objs, slow_objs = peers_only(fast_state), peers_only(slow_state)
        assert fast_objs == slow_objs and [len(x) for x in fast_objs] == [
            450,
            450,
            400,
        ]  # v6 publics are in fd77::/64
        assert {kr.proto for kr in fast_state.routes} == {kr.proto for kr in slow_state.routes} == {70}
        # Again: replace changes nothing and fails nothing.
        again = await TemplateApplier(a.ipr).apply(ops)
        assert again.ok and (await read_kernel(a.ipr, devices)).state == fast_state
        # A replace with a new MAC and public IP rewrites in place.
        moved = [
            Op(REPLACE, FdbEntry(DEV, "0a:58:00:00:00:00", ip_address("172.31.0.1"))),
            Op(REPLACE, Neighbour(DEV, ip_address("10.100.0.0"), "0a:58:00:00:00:00")),
        ]
        assert (await TemplateApplier(a.ipr).apply(moved)).ok
        assert "172.31.0.1" in two_nodes.a.run(["bridge", "fdb", "show", "dev", DEV]).stdout
        # Deleting everything, twice (the second time all are already gone: still ok).
        for _ in range(2):
            gone = await TemplateApplier(a.ipr).apply(as_deletes(ops) + [Op(DELETE, m.obj) for m in moved])
            assert gone.ok, gone.failures[:3]
        assert two_nodes.a.ip("route", "show", "proto", "70").count("\n") == 1  # node 2 only
        # The dataplane with the template applier puts node 2 back, and packets flow.
        assert a.ipr is not None and a.backend is not None
        kernel, planner = NetlinkKernel(a.ipr), Planner(cfg, a.backend)
        emptied = await reconcile_full(kernel, planner, [a.lease()], a.local())
        assert emptied.ok and len(emptied.ops) == 6
        back = await reconcile_full(kernel, planner, [a.lease(), b.lease()], a.local())
        assert back.ok and len(back.ops) == 6
        # the periodic check's digest of the real kernel is the planner's (no drift), until something drifts
        check = await kernel.check(a.backend.devices)
        assert check is not None and planner.checkable(a.local()) and planner.holds(check)
        two_nodes.a.ip("neigh", "del", "10.244.2.0", "dev", "flannel.1")
        check = await kernel.check(a.backend.devices)
        assert check is not None and not planner.holds(check)
        assert (await reconcile_full(kernel, planner, [a.lease(), b.lease()], a.local())).ok
        assert wait_until(lambda: two_nodes.a.ping("10.244.2.1", src="10.244.1.1"), timeout=5)
        assert (await a.reconcile([a.lease(), b.lease()])).ops == ()


async def test_template_applier_reports_the_failing_op_and_applies_the_rest(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    bad = Op(REPLACE, Route(ip_network("10.244.5.0/24"), ip_address("192.168.77.5"), "nosuch0"))
    unreachable = Op(
        REPLACE, Route(ip_network("10.244.8.0/24"), ip_address("10.9.9.9"), "eth0")
    )  # gw not on link
    good = Op(REPLACE, Route(ip_network("10.244.6.0/24"), ip_address("192.168.77.6"), "eth0"))
    gone = Op(DELETE, Route(ip_network("10.244.7.0/24"), ip_address("192.168.77.7"), "eth0"))
    gone_metric = Op(
        DELETE, Route(ip_network("10.244.7.0/24"), ip_address("192.168.77.7"), "eth0"), priority=5
    )
    gone_neigh = Op(DELETE, Neighbour("eth0", ip_address("192.168.77.99"), "02:00:00:00:00:99"))
    bad_neigh = Op(REPLACE, Neighbour("nosuch0", ip_address("192.168.77.98"), "02:00:00:00:00:98"))
    good_neigh = Op(REPLACE, Neighbour("eth0", ip_address("192.168.77.97"), "02:00:00:00:00:97"))
    async with AsyncIPRoute(netns=ns.name) as ipr:
        result = await TemplateApplier(ipr).apply(
            [bad_neigh, good_neigh, bad, unreachable, good, gone, gone_metric, gone_neigh]
        )
    assert [f.op for f in result.failures] == [bad_neigh, bad, unreachable]
    assert "nosuch0" in result.failures[0].error and "ENETUNREACH" in result.failures[2].error
    assert result.applied == 5
    assert "10.244.6.0/24 via 192.168.77.6 dev eth0 proto 70" in ns.ip("route")
    assert "192.168.77.97 lladdr 02:00:00:00:00:97 PERMANENT" in ns.ip("neigh", "show", "dev", "eth0")


async def test_refusals_are_mapped_to_their_ops_across_buffers_and_batches(two_nodes: TwoNodes) -> None:
    """Only each buffer's last message asks for an ACK: the refusals before it, wherever they fall, are still
    told apart from the messages that were carried out, in this batch and the next on the same socket."""
    ns = two_nodes.a

    def route(third: int, gateway: str) -> Op:
        return Op(REPLACE, Route(ip_network(f"10.244.{third}.0/24"), ip_address(gateway), "eth0"))

    good = [route(20 + i, f"192.168.77.{20 + i}") for i in range(9)]
    refused = [route(40 + i, f"10.9.9.{i + 1}") for i in range(4)]  # gateway not on the link: ENETUNREACH
    async with AsyncIPRoute(netns=ns.name) as ipr:
        applier = TemplateApplier(ipr, chunk_bytes=130)  # two 60-byte route messages per sendmsg
        assert (await applier.apply(good[:5])).ok
        mixed = [refused[0], good[5], good[6], refused[1], refused[2], good[7], good[8], refused[3]]
        result = await applier.apply(mixed)
        assert [f.op for f in result.failures] == refused
        assert all("ENETUNREACH" in f.error for f in result.failures)
        assert result.applied == 4
        assert (
            await applier.apply(good)
        ).ok  # the same socket: nothing of the last batch is taken for this one
    routes = ns.ip("route", "show", "proto", "70")
    assert all(f"10.244.{20 + i}.0/24 via 192.168.77.{20 + i} dev eth0" in routes for i in range(9))
    assert "10.244.4" not in routes


async def test_batches_applied_at_once_are_carried_out_in_the_order_they_were_made(
    two_nodes: TwoNodes,
) -> None:
    """A large batch goes to the sending thread and the caller goes on; a small one made meanwhile (which the
    loop would send itself) still reaches the kernel after it: the route ends up as the later batch says."""
    ns = two_nodes.a
    dst = ip_network("10.244.30.0/24")
    bulk = [
        Op(REPLACE, Neighbour("eth0", ip_address(f"192.168.77.{i}"), f"02:00:00:00:01:{i:02x}"))
        for i in range(100, 250)
    ]
    first = [*bulk, Op(REPLACE, Route(dst, ip_address("192.168.77.2"), "eth0"))]
    then = [Op(REPLACE, Route(dst, ip_address("192.168.77.3"), "eth0"))]
    async with AsyncIPRoute(netns=ns.name) as ipr:
        kernel = NetlinkKernel(ipr)
        earlier = asyncio.create_task(kernel.apply(first))
        await asyncio.sleep(0)  # handed over: the kernel carries it out while this goes on
        later = asyncio.create_task(kernel.apply(then))
        assert (await later).ok and (await earlier).ok
        assert ns.ip("route", "show", str(dst)).split()[:3] == [str(dst), "via", "192.168.77.3"]
        applier = TemplateApplier(ipr)  # the same through submit, results awaited in reverse
        done_first = await applier.submit(first)
        done_then = await applier.submit(then)
        assert (await done_then).ok and (await done_first).ok
    assert ns.ip("route", "show", str(dst)).split()[:3] == [str(dst), "via", "192.168.77.3"]


async def test_route_delete_with_a_metric_removes_only_that_route(two_nodes: TwoNodes) -> None:
    ns = two_nodes.a
    ns.ip("route", "add", "10.50.0.0/24", "via", "192.168.77.2", "dev", "eth0", "metric", "9", "proto", "70")
    ns.ip("route", "add", "10.50.0.0/24", "via", "192.168.77.2", "dev", "eth0", "proto", "70")
    async with AsyncIPRoute(netns=ns.name) as ipr:
        route = Route(ip_network("10.50.0.0/24"), ip_address("192.168.77.2"), "eth0")
        assert (await TemplateApplier(ipr).apply([Op(DELETE, route, priority=9)])).ok
    assert ns.ip("route", "show", "10.50.0.0/24").strip() == "10.50.0.0/24 via 192.168.77.2 dev eth0 proto 70"


class _DroppingSocket:
    """Answers the first chunk's messages (the second one refused), then fails like a full buffer."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes | bytearray) -> None:
        self.sent.append(bytes(data))

    def recv(self, size: int) -> bytes:
        import struct

        if len(self.sent) > 1:
            raise OSError(105, "No buffer space available")  # ENOBUFS
        acks = b""
        for seq, code in ((1, 0), (2, -17), (3, 0)):  # EEXIST for seq 2
            acks += struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", code) + bytes(16)
        return acks


def test_send_batch_maps_answers_and_reports_the_unanswered_when_the_socket_fails() -> None:
    from backend_service.kernel.netlink_fast import send_batch

    sock = _DroppingSocket()
    messages = [(seq, b"x" * 20) for seq in range(1, 7)]
    errors = send_batch(sock, messages, chunk_bytes=60)
    assert errors == {2: 17, 4: 105, 5: 105, 6: 105}
    assert [len(d) for d in sock.sent] == [60, 60]
    # only the last message of each buffer asks for an ACK (the kernel answers every refusal unasked)
    flags = [[int.from_bytes(d[i + 6 : i + 8], "little") & 4 for i in range(0, 60, 20)] for d in sock.sent]
    assert flags == [[0, 0, 4], [0, 0, 4]]
