"""Every lease is checked before it reaches the kernel; a bad one is rejected with a reason code."""

from __future__ import annotations

import json

import pytest

from backend_service import leases
from backend_service import validate as v
from proto.flannel.v1 import lease_pb2

from .factory import config, lease, node, validate_leases

VXLAN = config("vxlan")
HOSTGW = config("host-gw")
DUAL = config("vxlan", ipv6=True)


def reasons(leases: list[lease_pb2.Lease], cfg=VXLAN, me=None) -> list[str]:
    result = validate_leases(leases, cfg, me or node(1))
    return [r.reason for r in result.rejected]


def test_good_leases_are_accepted_sorted_by_key() -> None:
    result = validate_leases([lease(3), lease(2)], VXLAN, node(1))
    assert [str(p.subnet) for p in result.accepted] == ["10.244.2.0/24", "10.244.3.0/24"]
    assert result.rejected == ()
    assert result.accepted[0].vxlan is not None and result.accepted[0].vxlan.vni == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lease(2, subnet="10.244.2.0/33"), leases.MALFORMED_LEASE),
        (lease(2, subnet="10.244.2.1/24"), leases.MALFORMED_LEASE),
        (lease(2, public_ip="not-an-ip"), leases.MALFORMED_LEASE),
        (lease(2, public_ip="fd00::1"), leases.MALFORMED_LEASE),
        (lease(2, backend_data="{nope"), leases.BACKEND_DATA_MALFORMED),
        (lease(2, backend_data='{"VNI": 1}'), leases.BACKEND_DATA_MALFORMED),
        (
            lease(2, backend_data='{"VNI": "1", "VtepMAC": "02:00:00:00:00:01"}'),
            leases.BACKEND_DATA_MALFORMED,
        ),
        (lease(2, backend_data='{"VNI": 1, "VtepMAC": "01:00:5e:00:00:01"}'), leases.BACKEND_DATA_MALFORMED),
        (lease(2, backend_data="[]"), leases.BACKEND_DATA_MALFORMED),
        (lease(2, backend="host-gw"), v.BACKEND_MISMATCH),
        (lease(2, subnet=""), v.MISSING_SUBNET),
        (lease(2, subnet="10.245.2.0/24"), v.SUBNET_OUTSIDE_NETWORK),
        (lease(2, subnet="10.244.0.0/23"), v.WRONG_PREFIX_LENGTH),
        (lease(2, subnet="10.244.2.0/25"), v.WRONG_PREFIX_LENGTH),
        (lease(2, subnet="10.244.1.0/24"), v.OWN_SUBNET),
        (lease(2, public_ip=""), v.MISSING_PUBLIC_IP),
        (lease(2, public_ip="10.244.9.9"), v.PUBLIC_IP_IN_OVERLAY),
        (lease(2, public_ip="192.168.77.1"), v.OWN_PUBLIC_IP),
        (lease(2, backend_data=""), v.MISSING_BACKEND_DATA),
        (lease(2, vni=7), v.VNI_MISMATCH),
    ],
)
def test_rejection(bad: lease_pb2.Lease, reason: str) -> None:
    result = validate_leases([bad, lease(3)], VXLAN, node(1))
    assert [r.reason for r in result.rejected] == [reason]
    assert [p.node_name for p in result.accepted] == ["node-3"]  # one bad lease never costs the others
    rejection = result.rejected[0]
    assert rejection.lease == bad
    assert "node-2" in rejection.message
    proto = rejection.to_proto()
    assert proto.reason == reason and proto.lease == bad and proto.message == rejection.message


def test_host_gw_rejects_a_peer_not_directly_connected() -> None:
    far = lease(2, backend="host-gw", public_ip="172.16.0.2")
    near = lease(3, backend="host-gw")
    result = validate_leases([far, near], HOSTGW, node(1))
    assert [(r.reason, r.lease.node_name) for r in result.rejected] == [(v.NOT_DIRECTLY_CONNECTED, "node-2")]
    assert "172.16.0.2" in result.rejected[0].message
    assert [p.node_name for p in result.accepted] == ["node-3"]


def test_overlapping_leases_first_key_wins() -> None:
    a = lease(2, key="a-node")
    b = lease(2, key="b-node", node_name="node-b", public_ip="192.168.77.9")
    result = validate_leases([b, a], VXLAN, node(1))
    assert [p.key for p in result.accepted] == ["a-node"]
    assert [(r.reason, r.lease.key) for r in result.rejected] == [(v.OVERLAPS_LEASE, "b-node")]
    assert "node-2" in result.rejected[0].message


def test_a_bug_while_validating_rejects_the_lease_instead_of_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    real = v.check_lease

    def boom(msg, cfg, me, source):
        if msg.node_name == "node-2":
            raise KeyError("surprise")
        return real(msg, cfg, me, source)

    monkeypatch.setattr(v, "check_lease", boom)
    result = validate_leases([lease(2), lease(3)], VXLAN, node(1))
    assert [r.reason for r in result.rejected] == [v.INTERNAL_ERROR]
    assert [p.node_name for p in result.accepted] == ["node-3"]


def test_dual_stack_checks_ipv6_too() -> None:
    me = node(1, ipv6=True)
    assert reasons([lease(2, ipv6=True)], DUAL, me) == []
    assert reasons([lease(2, ipv6=True, ipv6_subnet="fd00:11::/64")], DUAL, me) == [v.SUBNET_OUTSIDE_NETWORK]
    assert reasons([lease(2, ipv6=True, ipv6_subnet="fd00:10::/60")], DUAL, me) == [v.WRONG_PREFIX_LENGTH]
    assert reasons([lease(2, ipv6=True, ipv6_subnet="fd00:10:0:1::/64")], DUAL, me) == [v.OWN_SUBNET]
    assert reasons([lease(2, ipv6=True, public_ipv6="")], DUAL, me) == [v.MISSING_PUBLIC_IP]
    assert reasons([lease(2, ipv6=True, public_ipv6="fd00:10::5")], DUAL, me) == [v.PUBLIC_IP_IN_OVERLAY]
    assert reasons([lease(2, ipv6=True, public_ipv6="fd77::1")], DUAL, me) == [v.OWN_PUBLIC_IP]
    assert reasons([lease(2, ipv6=True, backend_v6_data="")], DUAL, me) == [v.MISSING_BACKEND_DATA]
    v6data = json.dumps({"VNI": 2, "VtepMAC": "02:00:00:00:00:01"})
    assert reasons([lease(2, ipv6=True, backend_v6_data=v6data)], DUAL, me) == [v.VNI_MISMATCH]


def test_dual_stack_accepts_an_ipv4_only_peer() -> None:
    result = validate_leases([lease(2)], DUAL, node(1, ipv6=True))
    assert result.rejected == () and result.accepted[0].ipv6_subnet is None


def test_families_we_do_not_run_are_dropped() -> None:
    result = validate_leases([lease(2, ipv6=True)], VXLAN, node(1))
    peer = result.accepted[0]
    assert peer.ipv6_subnet is None and peer.public_ipv6 is None and peer.vxlan_v6 is None


def test_every_reason_code_is_listed() -> None:
    assert len(set(v.REASONS)) == len(v.REASONS) == 16


def test_our_own_lease_is_skipped_silently() -> None:
    result = validate_leases([lease(1), lease(2)], VXLAN, node(1))
    assert [p.node_name for p in result.accepted] == ["node-2"]
    assert result.rejected == ()


def test_our_subnet_with_another_public_ip_is_a_clash() -> None:
    assert reasons([lease(1, public_ip="192.168.77.5")]) == [v.OWN_SUBNET]
