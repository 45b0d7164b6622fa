"""The lease service's flags and FLANNELD_* variables: parsed once, bad values named."""

from __future__ import annotations

import pytest

from lease_service import cli


def test_flags_win_over_the_environment() -> None:
    settings = cli.parse(
        ["--etcd-prefix", "/flag"], {"FLANNELD_ETCD_PREFIX": "/env", "FLANNELD_IP_MASQ": "true"}
    )
    assert settings.etcd_prefix == "/flag" and settings.ip_masq


def test_the_socket_group_may_be_a_name_or_a_number() -> None:
    assert cli.parse(["--socket-group", "root"], {}).socket_gid == 0
    assert cli.parse(["--socket-group", "65534"], {}).socket_gid == 65534


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--socket-group", "no-such-group-here"], ["--socket-group", "no-such-group-here"]),
        (["--etcd-endpoints", "127.0.0.1:2379"], ["--etcd-endpoints", "http://"]),
        (["--public-ip", "300.1.1.1"], ["--public-ip", "300.1.1.1"]),
        (["--etcd-prefix", "relative"], ["--etcd-prefix", "relative"]),
        (["--grpc-listen", "9000"], ["--grpc-listen", "HOST:PORT"]),
        (["--etcd-cafile", "/no/such/ca.pem"], ["--etcd-cafile", "/no/such/ca.pem"]),
    ],
)
def test_bad_values_are_refused_naming_the_flag(argv: list[str], words: list[str]) -> None:
    with pytest.raises(cli.UsageError) as err:
        cli.parse(argv, {})
    for word in words:
        assert word in str(err.value)


def test_a_bad_boolean_in_the_environment_is_named() -> None:
    with pytest.raises(cli.UsageError, match="FLANNELD_IP_MASQ"):
        cli.parse([], {"FLANNELD_IP_MASQ": "maybe"})
