"""WireGuard keys: our X25519 agrees with wireguard-tools, and the key file is made once, safely."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from backend_service.config import ConfigError, WireGuardOptions, parse_backend
from backend_service.kernel.wgctl import WgError, parse_dump
from backend_service.leases import LeaseError, parse_wireguard_data
from backend_service.wgkey import Key, WireGuardKeyError, is_key
from backend_service.wireguard.keys import key_file, load_or_create

needs_wg = pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools (wg) is not installed")


@needs_wg
def test_public_keys_match_wg_pubkey() -> None:
    for _ in range(5):
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True)
        assert str(Key.parse(private).public()) == public.stdout.strip()


@needs_wg
def test_generated_keys_are_accepted_by_wg() -> None:
    key = Key.generate()
    public = subprocess.run(["wg", "pubkey"], input=str(key), capture_output=True, text=True, check=True)
    assert public.stdout.strip() == str(key.public())


@pytest.mark.parametrize("text", ["", "abc", "A" * 44, "!" * 43 + "=", "AAAA" * 11, "QUFB" * 10 + "QQ=="])
def test_malformed_keys_are_named(text: str) -> None:
    with pytest.raises(WireGuardKeyError, match="WireGuard key"):
        Key.parse(text)


def test_repr_never_shows_the_key() -> None:
    key = Key.generate()
    assert str(key) not in repr(key)


def test_key_file_is_made_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "wgkey"
    first, created = load_or_create(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create(path)
    assert (again, created_again) == (first, False)
    assert path.read_text().strip() == str(first)


def test_key_file_through_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text(f"{Key.generate()}\n")
    link = tmp_path / "wgkey"
    os.symlink(target, link)
    with pytest.raises(WireGuardKeyError, match="symlink"):
        load_or_create(link)


def test_a_corrupt_key_file_is_named_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "wgkey"
    path.write_text("not a key\n")
    with pytest.raises(WireGuardKeyError, match=str(path)):
        load_or_create(path)
    assert path.read_text() == "not a key\n"


def test_key_file_location_follows_flannel() -> None:
    assert key_file(Path("/run/flannel"), {}) == Path("/run/flannel/wgkey")
    assert key_file(Path("/run/flannel"), {"WIREGUARD_KEY_FILE": "/etc/flannel/key"}) == Path(
        "/etc/flannel/key"
    )


def test_dump_is_parsed() -> None:
    dump = (
        "cHJpdmF0ZQ==\tWWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=\t51820\toff\n"
        "UGVlcjFQZWVyMVBlZXIxUGVlcjFQZWVyMVBlZXIxUGU=\t(none)\t192.168.1.2:51820\t10.244.3.0/24\t1700000000\t10\t20\toff\n"
        "UGVlcjJQZWVyMlBlZXIyUGVlcjJQZWVyMlBlZXIyUGU=\tcHNrcHNrcHNrcHNrcHNrcHNrcHNrcHNrcHNrcHNrcHM=\t[fd00::2]:51821"
        "\t10.244.4.0/24,fd10:0:0:4::/64\t0\t0\t0\t25\n"
    )
    state = parse_dump("flannel-wg", dump)
    assert state.listen_port == 51820
    assert state.public_key == "WWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="
    one, two = state.peers.values()
    assert one.peer.endpoint_text == "192.168.1.2:51820" and one.peer.psk is None and one.latest_handshake
    assert two.peer.endpoint_text == "[fd00::2]:51821" and two.peer.keepalive == 25
    assert [str(n) for n in two.peer.allowed_ips] == ["10.244.4.0/24", "fd10:0:0:4::/64"]


def test_unreadable_dump_is_an_error() -> None:
    with pytest.raises(WgError, match="cannot read"):
        parse_dump("flannel-wg", "key\tpub\tnot-a-port\toff\n")


def _non_canonical(key: Key) -> str:
    """``key``'s text with the two spare bits of its last base64 digit set: the same 32 bytes to a lax
    decoder, but not a key to ``wg``."""
    text = str(key)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return text[:42] + alphabet[alphabet.index(text[42]) | 3] + "="


def test_one_parser_for_every_key_text() -> None:
    """The key file, the config's PSK and a peer's PublicKey are all read by Key.parse: what wg accepts."""
    key = Key.generate()
    bad = _non_canonical(key)
    assert bad != str(key) and base64.b64decode(bad) == key.raw
    for text in (bad, f" {key}", f"{key}\n"):
        with pytest.raises(WireGuardKeyError, match="WireGuard key"):
            Key.parse(text)
        assert not is_key(text)
        with pytest.raises(ConfigError, match="Backend.PSK"):
            parse_backend(json.dumps({"Type": "wireguard", "PSK": text}))
        with pytest.raises(LeaseError, match="PublicKey"):
            parse_wireguard_data("backend_data", json.dumps({"PublicKey": text}))
    assert Key.parse(str(key)) == key and is_key(str(key))
    options = parse_backend(json.dumps({"Type": "wireguard", "PSK": str(key)}))[1]
    assert isinstance(options, WireGuardOptions) and options.psk == str(key)
    assert parse_wireguard_data("backend_data", json.dumps({"PublicKey": str(key)})).public_key == str(key)


@needs_wg
def test_wg_refuses_what_the_parser_refuses() -> None:
    bad = _non_canonical(Key.generate())
    refused = subprocess.run(["wg", "pubkey"], input=bad, capture_output=True, text=True, check=False)
    assert refused.returncode != 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "too deep"),
        (json.dumps({"PublicKey": "x", "pad": "y" * (2 * 1024 * 1024)}), "too large"),
        ('{"PublicKey": ', "not json"),
        ('"a string"', "not a json object"),
    ],
    ids=["nested", "oversized", "truncated", "not-an-object"],
)
def test_hostile_wireguard_backend_data_is_refused_by_name(text: str, reason: str) -> None:
    """A peer's WireGuard backend data goes through the same bounded decoder as vxlan's."""
    with pytest.raises(LeaseError) as refused:
        parse_wireguard_data("backend_data", text)
    assert refused.value.reason == "BACKEND_DATA_MALFORMED"
    assert reason in str(refused.value).lower().replace("_", " ")
