"""Flags and FLANNELD_* environment variables become one Config; bad values name the flag."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

import flannel_flags
from supervisor import cli


def test_defaults_pass_nothing_to_the_children_but_the_run_dir() -> None:
    config = cli.parse([], {})
    assert config.run_dir == Path("/run/flannel")
    assert config.lease_args == () and config.backend_args == ()
    assert config.healthz_ip == ipaddress.IPv4Address("0.0.0.0") and config.healthz_port == 0
    assert config.restart == cli.RestartSettings(
        max_restarts=5, window=60, backoff_initial=0.5, backoff_max=30
    )
    assert config.stop_grace == 10 and config.log_format == "text"


def test_each_child_gets_only_its_flags_in_the_shape_it_takes() -> None:
    config = cli.parse(
        [
            "--etcd-endpoints",
            "http://a:2379",
            "--iface",
            "eth0",
            "--iface",
            "10.0.0.1",
            "--ip-masq",
            "--iface-regex",
            "^en",
            "--public-ip",
            "10.0.0.1",
            "--public-ipv6",
            "fd00::1",
            "--kube-subnet-mgr",
            "--subnet-lease-renew-margin",
            "30",
            "-v",
            "2",
            "--healthz-port",
            "8471",
            "--set-node-network-unavailable=false",
            "--kube-annotation-prefix",
            "example.com",
        ],
        {},
    )
    assert config.lease_args == (
        "--etcd-endpoints", "http://a:2379",
        "--kube-subnet-mgr",
        "--kube-annotation-prefix", "example.com",
        "--set-node-network-unavailable=false",
        "--iface", "eth0", "--iface", "10.0.0.1",
        "--iface-regex", "^en",
        "--public-ip", "10.0.0.1",
        "--public-ipv6", "fd00::1",
        "--subnet-lease-renew-margin", "30",
        "--ip-masq",
        "-v", "-v",
    )  # fmt: skip
    # the interface is the lease service's decision alone: flannel-backend gets none of its flags
    assert config.backend_args == (
        "--ip-masq",
        "-v", "-v",
    )  # fmt: skip
    assert config.healthz_port == 8471


def test_environment_is_read_with_the_flannel_prefix() -> None:
    env = {
        "FLANNELD_ETCD_ENDPOINTS": "http://e:2379",
        "FLANNELD_ETCD_PREFIX": "/my/net",
        "FLANNELD_IFACE": "eth0, eth1",
        "FLANNELD_IP_MASQ": "true",
        "FLANNELD_HEALTHZ_PORT": "9000",
        "FLANNELD_MAX_RESTARTS": "2",
        "FLANNELD_RESTART_WINDOW": "2m",
    }
    config = cli.parse([], env)
    assert config.lease_args == (
        "--etcd-endpoints", "http://e:2379", "--etcd-prefix", "/my/net", "--iface", "eth0", "--iface", "eth1",
        "--ip-masq",
    )  # fmt: skip
    assert config.healthz_port == 9000
    assert config.restart.max_restarts == 2 and config.restart.window == 120


def test_flags_win_over_the_environment() -> None:
    env = {"FLANNELD_ETCD_PREFIX": "/env", "FLANNELD_IP_MASQ": "true", "FLANNELD_IFACE": "eth9"}
    config = cli.parse(["--etcd-prefix", "/flag", "--ip-masq=false", "--iface", "eth0"], env)
    assert config.lease_args == ("--etcd-prefix", "/flag", "--iface", "eth0")


def test_commands_are_split_like_a_shell() -> None:
    config = cli.parse(["--backend-cmd", "/opt/my backend --mode 'a b'", "--lease-cmd", "lease --x"], {})
    assert config.backend_cmd == ("/opt/my", "backend", "--mode", "a b")
    assert config.lease_cmd == ("lease", "--x")


def test_lease_identity_is_resolved_and_owns_the_socket() -> None:
    config = cli.parse(["--lease-user", "nobody", "--lease-group", "nogroup"], {})
    assert config.lease_identity == cli.Identity(uid=65534, gid=65534, user="nobody", group="nogroup")
    assert config.socket_group == "nogroup"
    numeric = cli.parse(["--lease-user", "4242"], {})
    assert numeric.lease_identity == cli.Identity(uid=4242, gid=4242)


@pytest.mark.parametrize(
    ("argv", "flag", "expected"),
    [
        (["--max-restarts", "many"], "--max-restarts", "expected an integer"),
        (["--max-restarts", "-1"], "--max-restarts", ">= 0"),
        (["--healthz-port", "70000"], "--healthz-port", "from 0 to 65535"),
        (["--public-ip", "10.0.0"], "--public-ip", "expected an IPv4 address"),
        (["--public-ipv6", "10.0.0.1"], "--public-ipv6", "expected an IPv6 address"),
        (["--restart-window", "0"], "--restart-window", "greater than zero"),
        (["--stop-grace", "soon"], "--stop-grace", "expected a duration"),
        (["--log-format", "xml"], "--log-format", "'text' or 'json'"),
        (["--ip-masq=maybe"], "--ip-masq", "expected a boolean"),
        (["--iface-regex", "eth[0"], "--iface-regex", "expected a regular expression"),
        (["--backend-cmd", "'unterminated"], "--backend-cmd", "expected a command line"),
    ],
)
def test_a_bad_flag_is_an_error_naming_it(argv: list[str], flag: str, expected: str) -> None:
    with pytest.raises(cli.ConfigError) as error:
        cli.parse(argv, {})
    assert flag in str(error.value) and expected in str(error.value)


def test_a_bad_environment_value_names_the_variable_and_the_flag() -> None:
    with pytest.raises(cli.ConfigError, match=r"FLANNELD_HEALTHZ_PORT \(flag --healthz-port\).*integer"):
        cli.parse([], {"FLANNELD_HEALTHZ_PORT": "http"})


def test_unknown_users_and_inconsistent_back_off_are_errors() -> None:
    with pytest.raises(cli.ConfigError, match="--lease-user: no such user 'no-such-user-x'"):
        cli.parse(["--lease-user", "no-such-user-x"], {})
    with pytest.raises(cli.ConfigError, match="--lease-group: no such group"):
        cli.parse(["--lease-group", "no-such-group-x"], {})
    with pytest.raises(cli.ConfigError, match="--restart-backoff-max"):
        cli.parse(["--restart-backoff-initial", "5", "--restart-backoff-max", "1"], {})


def test_help_lists_flags_and_their_environment_variables() -> None:
    with pytest.raises(flannel_flags.Done) as done:
        cli.parse(["--help"], {})
    out = done.value.text
    for text in (
        "--etcd-endpoints",
        "FLANNELD_ETCD_ENDPOINTS",
        "--backend-cmd",
        "--lease-user",
        "--healthz-port",
        "--max-restarts",
        "--stop-grace",
        "lease service",
        "CAP_NET_ADMIN",
    ):
        assert text in out


def test_the_console_script_reports_a_bad_env_value_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from supervisor.__main__ import main

    os.environ["FLANNELD_MAX_RESTARTS"] = "x"
    try:
        assert main([]) == 2
    finally:
        del os.environ["FLANNELD_MAX_RESTARTS"]
    assert "FLANNELD_MAX_RESTARTS" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-v=2"], ["--v=2"], ["-v", "2"], ["--v", "2"], ["-v", "-v"]])
def test_verbosity_is_accepted_the_ways_flannel_users_write_it(argv: list[str]) -> None:
    config = cli.parse(argv, {})
    assert config.backend_args == ("-v", "-v") and config.lease_args == ("-v", "-v")
