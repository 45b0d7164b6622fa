"""The public IP is found as flannel finds it: --public-ip, --iface (name or address), --iface-regex,
else the default route's interface; checked in a network namespace of our own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from flannel_testkit.netns import Netns, netns

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    with netns() as made:
        for name, address in (("eth0", "192.168.31.5/24"), ("ens7", "10.9.8.7/24")):
            made.ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
            made.ip("addr", "add", address, "dev", name)
            made.ip("link", "set", name, "up")
            made.ip("link", "set", f"{name}p", "up")
        made.ip("route", "add", "default", "via", "10.9.8.1", "dev", "ens7")
        yield made


def resolve(ns: Netns, *args: str) -> dict[str, str]:
    code = (
        "import json, sys; from ipaddress import ip_address as a; from lease_service.publicip import resolve, PublicIPError\n"
        "args = json.loads(sys.argv[1])\n"
        "try:\n"
        "    r = resolve(a(args['ip']) if args.get('ip') else None, None, tuple(args.get('iface', ())), tuple(args.get('regex', ())))\n"
        "    print(json.dumps({'ip': str(r.ipv4), 'iface': r.iface}))\n"
        "except PublicIPError as e:\n"
        "    print(json.dumps({'error': str(e)}))\n"
    )
    spec = dict(arg.split("=", 1) for arg in args)
    doc = {k: ([v] if k in ("iface", "regex") else v) for k, v in spec.items()}
    out = subprocess.run([*ns.exec_prefix, sys.executable, "-c", code, json.dumps(doc)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_the_default_route_interface_is_used_when_nothing_is_given(ns: Netns) -> None:
    assert resolve(ns) == {"ip": "10.9.8.7", "iface": "ens7"}


def test_iface_by_name_or_by_address(ns: Netns) -> None:
    assert resolve(ns, "iface=eth0") == {"ip": "192.168.31.5", "iface": "eth0"}
    assert resolve(ns, "iface=192.168.31.5") == {"ip": "192.168.31.5", "iface": "eth0"}


def test_iface_regex(ns: Netns) -> None:
    assert resolve(ns, "regex=^eth") == {"ip": "192.168.31.5", "iface": "eth0"}


def test_public_ip_wins(ns: Netns) -> None:
    assert resolve(ns, "ip=1.2.3.4")["ip"] == "1.2.3.4"


def test_an_interface_that_does_not_exist_is_named_in_the_error(ns: Netns) -> None:
    assert "wlan9" in resolve(ns, "iface=wlan9")["error"]
