"""Accepted peers become routes, neighbours and FDB entries, per backend (pure)."""

from __future__ import annotations

import hashlib
import json
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from backend_service.config import VxlanOptions, WireGuardOptions
from backend_service.desired import MODE_DIRECT, MODE_HOST_GW, MODE_VXLAN, FdbEntry, Neighbour, Route
from backend_service.hostgw.desired import hostgw_desired
from backend_service.leases import PeerLease, parse_lease
from backend_service.node import PublicInterface
from backend_service.vxlan.desired import vxlan_desired
from backend_service.vxlan.device import device_name, vtep_mac
from backend_service.wgkey import Key
from backend_service.wireguard.desired import wireguard_desired

from .factory import config, lease, node, validate_leases


def peers(*leases, cfg=None, me=None):
    result = validate_leases(list(leases), cfg or config("vxlan"), me or node(1))
    assert result.rejected == ()
    return result.accepted


def test_vxlan_peer_gets_route_neighbour_and_fdb_entry() -> None:
    state = vxlan_desired(peers(lease(2)), VxlanOptions(), node(1), "eth0", "flannel.1", None)
    mac = vtep_mac(1, ip_address("192.168.77.2"))
    assert state.routes == {
        Route(ip_network("10.244.2.0/24"), ip_address("10.244.2.0"), "flannel.1", onlink=True)
    }
    assert state.neighbours == {Neighbour("flannel.1", ip_address("10.244.2.0"), mac)}
    assert state.fdb == {FdbEntry("flannel.1", mac, ip_address("192.168.77.2"))}
    assert [(p.peer.node_name, p.mode) for p in state.peers] == [("node-2", MODE_VXLAN)]
    assert len(state.routes) + len(state.neighbours) + len(state.fdb) + len(state.wg_peers) == 3


def test_many_peers_three_objects_each() -> None:
    leases = [
        lease(n, public_ip=f"192.168.{n // 250}.{n % 250 + 1}", key=f"k{n:05d}", subnet=f"10.244.{n}.0/24")
        for n in range(2, 250)
    ]
    state = vxlan_desired(peers(*leases), VxlanOptions(), node(1), "eth0", "flannel.1", None)
    assert len(state.routes) == len(state.neighbours) == len(state.fdb) == 248


def test_direct_routing_uses_plain_route_for_peers_on_our_l2_network() -> None:
    cfg = config("vxlan", DirectRouting=True)
    near, far = lease(2), lease(3, public_ip="172.16.0.3")
    me = node(1, connected=(("192.168.77.0/24", "eth0"), ("172.16.0.0/24", "eth1")))
    state = vxlan_desired(
        peers(near, far, cfg=cfg, me=me), VxlanOptions(direct_routing=True), me, "eth0", "flannel.1", None
    )
    assert Route(ip_network("10.244.2.0/24"), ip_address("192.168.77.2"), "eth0") in state.routes
    # far is connected, but not on the public interface: encapsulated.
    assert (
        Route(ip_network("10.244.3.0/24"), ip_address("10.244.3.0"), "flannel.1", onlink=True) in state.routes
    )
    assert [n.dst for n in state.neighbours] == [ip_address("10.244.3.0")]
    assert {p.peer.node_name: p.mode for p in state.peers} == {"node-2": MODE_DIRECT, "node-3": MODE_VXLAN}


def test_without_direct_routing_same_l2_peers_are_encapsulated() -> None:
    state = vxlan_desired(peers(lease(2)), VxlanOptions(), node(1), "eth0", "flannel.1", None)
    assert {r.ifname for r in state.routes} == {"flannel.1"}


def test_vxlan_dual_stack_uses_the_v6_device() -> None:
    cfg = config("vxlan", ipv6=True)
    me = node(1, ipv6=True)
    state = vxlan_desired(
        peers(lease(2, ipv6=True), cfg=cfg, me=me),
        VxlanOptions(),
        me,
        "eth0",
        device_name(1, 4),
        device_name(1, 6),
    )
    assert (
        Route(ip_network("fd00:10:0:2::/64"), ip_address("fd00:10:0:2::"), "flannel-v6.1", onlink=True)
        in state.routes
    )
    assert FdbEntry("flannel-v6.1", vtep_mac(1, ip_address("fd77::2")), ip_address("fd77::2")) in state.fdb
    assert len(state.routes) == 2 and len(state.neighbours) == 2 and len(state.fdb) == 2


def test_host_gw_routes_via_public_ip_on_the_interface_that_reaches_it() -> None:
    cfg = config("host-gw")
    me = node(1, connected=(("192.168.77.0/24", "eth0"), ("192.168.77.0/28", "eth1")))
    state = hostgw_desired(
        peers(lease(2, backend="host-gw"), lease(30, backend="host-gw"), cfg=cfg, me=me), me
    )
    assert state.routes == {
        Route(ip_network("10.244.2.0/24"), ip_address("192.168.77.2"), "eth1"),  # most specific wins
        Route(ip_network("10.244.30.0/24"), ip_address("192.168.77.30"), "eth0"),
    }
    assert state.neighbours == frozenset() and state.fdb == frozenset()
    assert {p.mode for p in state.peers} == {MODE_HOST_GW}


def test_vtep_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = vtep_mac(1, ip_address("192.168.77.1"))
    assert mac == vtep_mac(1, ip_address("192.168.77.1"))
    assert mac != vtep_mac(2, ip_address("192.168.77.1")) != vtep_mac(1, ip_address("192.168.77.2"))
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
    # the MAC of every earlier version (hashlib's SHA-256): a re-created device keeps what peers know
    digest = hashlib.sha256(b"flannel-py vxlan 1 192.168.77.1").digest()[:6]
    assert mac == ":".join(f"{b:02x}" for b in bytes([(digest[0] | 0x02) & 0xFE, *digest[1:]]))


def _wg_peer(n: int, *, public_ip: str, public_ipv6: str) -> PeerLease:
    data = json.dumps({"PublicKey": str(Key.generate().public())})
    return parse_lease(
        lease(
            n,
            backend="wireguard",
            ipv6=True,
            public_ip=public_ip,
            public_ipv6=public_ipv6,
            backend_data=data,
            backend_v6_data=data,
        )
    )


# Global unicast addresses (never contacted: the state is only computed); documentation ranges count as private.
PUBLIC = PublicInterface("eth0", 2, 1500, IPv4Address("9.9.9.1"), IPv6Address("2606:4700::1"))


def test_wireguard_separate_mode_has_a_peer_per_family_on_its_own_device() -> None:
    peer = _wg_peer(2, public_ip="192.168.77.2", public_ipv6="fd77::2")
    state = wireguard_desired([peer], WireGuardOptions(mode="separate", keepalive=25), PUBLIC)
    assert {(p.ifname, p.endpoint, p.allowed_ips, p.keepalive) for p in state.wg_peers} == {
        ("flannel-wg", (ip_address("192.168.77.2"), 51820), (ip_network("10.244.2.0/24"),), 25),
        ("flannel-wg-v6", (ip_address("fd77::2"), 51821), (ip_network("fd00:10:0:2::/64"),), 25),
    }
    assert state.routes == {
        Route(ip_network("10.244.2.0/24"), None, "flannel-wg"),
        Route(ip_network("fd00:10:0:2::/64"), None, "flannel-wg-v6"),
    }


def test_wireguard_one_device_modes_pick_the_endpoint_by_mode() -> None:
    private_v4 = _wg_peer(2, public_ip="192.168.77.2", public_ipv6="2606:4700::2")
    public_v4 = _wg_peer(3, public_ip="9.9.9.3", public_ipv6="2606:4700::3")
    picked: dict[str, list[str]] = {}
    for mode in ("auto", "ipv4", "ipv6"):
        state = wireguard_desired([private_v4, public_v4], WireGuardOptions(mode=mode), PUBLIC)
        assert {p.ifname for p in state.wg_peers} == {"flannel-wg"}
        assert all(len(p.allowed_ips) == 2 for p in state.wg_peers)
        picked[mode] = sorted(str(p.endpoint[0]) for p in state.wg_peers if p.endpoint is not None)
    # auto: a public IPv4 first; a private one yields to a public IPv6 (this node has one)
    assert picked == {
        "auto": ["2606:4700::2", "9.9.9.3"],
        "ipv4": ["192.168.77.2", "9.9.9.3"],
        "ipv6": ["2606:4700::2", "2606:4700::3"],
    }
