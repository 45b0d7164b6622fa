"""The lease parser's fast readers (IPv4 text, vxlan backend data) answer exactly what the general ones
(``ipaddress``, the bounded JSON decoder) answer, or step aside for them."""

from __future__ import annotations

import ipaddress
import json
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from backend_service import leases
from backend_service.config import MAX_VNI
from backend_service.validate import _overlap
from flannel_rpc import ipv4, vxlan_data
from flannel_rpc.subnets import inside

octet = st.one_of(
    st.integers(0, 255).map(str), st.sampled_from(["256", "01", "00", "1 ", "٣", "+1", "0x1", ""])
)
prefix = st.one_of(
    st.integers(0, 33).map(str), st.sampled_from(["024", "", "-1", "2 4", "255.255.255.0", "٢٤"])
)
v4_texts = st.one_of(
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", octet, octet, octet, octet),
    st.text(max_size=20),
)
v4_cidrs = st.one_of(
    st.builds(lambda a, p: f"{a}/{p}", v4_texts, prefix),
    st.builds(lambda n: str(n), st.ip_addresses(v=4).map(lambda a: IPv4Network(f"{a}/24", strict=False))),
    st.text(max_size=24),
)
EXAMPLES = settings(max_examples=200, deadline=None, database=None)


def _general(parse: type[IPv4Network | IPv4Address], text: str) -> object:
    try:
        return parse(text)
    except ValueError:
        return None


@EXAMPLES
@given(v4_cidrs)
def test_the_fast_ipv4_network_reader_agrees_with_ipaddress(text: str) -> None:
    fast = ipv4.cidr(text)
    if fast is not None:
        assert fast == _general(IPv4Network, text)
        assert str(fast) == str(IPv4Network(text))


@EXAMPLES
@given(v4_texts)
def test_the_fast_ipv4_address_reader_agrees_with_ipaddress(text: str) -> None:
    fast = ipv4.address(text)
    assert fast == _general(IPv4Address, text)  # inet_pton takes exactly the spellings ipaddress takes


@EXAMPLES
@given(st.ip_addresses(v=4))
def test_unicast_checks_in_integers_agree_with_ipaddress(addr: IPv4Address) -> None:
    expected = (
        addr.is_unspecified
        or addr == IPv4Address("255.255.255.255")
        or addr.is_multicast
        or addr.is_loopback
        or addr.is_link_local
        or addr in IPv4Network("240.0.0.0/4")
    )
    assert bool(leases._not_unicast_v4(int(addr))) == expected


networks = st.builds(
    lambda addr, length: IPv4Network((int(addr) >> (32 - length) << (32 - length) if length else 0, length)),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)


@EXAMPLES
@given(networks, networks)
def test_subnet_checks_in_integers_agree_with_ipaddress(a: IPv4Network, b: IPv4Network) -> None:
    assert inside(a, b) == a.subnet_of(b)
    assert _overlap(a, b) == a.overlaps(b)


space = st.sampled_from(["", " ", "\n", "\t ", "\r\n", "\x0c", "\u00a0"])
vxlan_texts = st.one_of(
    st.builds(
        lambda s, vni, mac, key: f'{{{s}"{key[0]}"{s}:{s}{vni}{s},{s}"{key[1]}"{s}:{s}"{mac}"{s}}}',
        space,
        st.one_of(st.integers(0, 1 << 25).map(str), st.sampled_from(["01", "-1", "1.0", "true", '"1"'])),
        st.one_of(
            st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":")),
            st.sampled_from(
                ["0A:58:00:00:01:02", "01:00:5e:00:00:01", "00:00:00:00:00:00", "0a:58:00:00:01"]
            ),
        ),
        st.sampled_from([("VNI", "VtepMAC"), ("vni", "vtepmac"), ("VtepMAC", "VNI")]),
    ),
    st.text(max_size=60),
)


def _decoded(text: str) -> object:
    try:
        return leases.parse_vxlan_data("backend_data", text)
    except leases.LeaseError as exc:
        return exc.reason


@EXAMPLES
@given(vxlan_texts)
def test_the_fast_vxlan_data_reader_agrees_with_the_json_decoder(text: str) -> None:
    answer = _decoded(text)
    if vxlan_data.fields(text) is not None:  # the fast path took it: JSON says the same
        obj = json.loads(text)
        assert set(obj) == {"VNI", "VtepMAC"}
        mac = obj["VtepMAC"].lower()
        unicast = obj["VNI"] <= MAX_VNI and not int(mac[:2], 16) & 1 and mac != "00:00:00:00:00:00"
        assert answer == (leases.VxlanData(obj["VNI"], mac) if unicast else leases.BACKEND_DATA_MALFORMED)


def test_the_fast_readers_take_the_common_spellings() -> None:
    assert ipv4.cidr("10.244.3.0/24") == ipaddress.ip_network("10.244.3.0/24")
    assert ipv4.cidr("10.244.3.1/24") is None  # host bits: ipaddress names the error
    assert ipv4.address("192.168.1.5") == IPv4Address("192.168.1.5")
    assert vxlan_data.fields('{"VNI":1,"VtepMAC":"0a:58:00:00:01:02"}') is not None
    assert vxlan_data.fields('{"VNI": 1, "VtepMAC": "0A:58:00:00:01:02"}') is not None
