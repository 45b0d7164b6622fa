"""Go's flag syntax, Go's booleans, FLANNELD_* variables and their precedence, the same in every CLI."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import flannel_flags
from backend_service import cli as backend_cli
from lease_service import cli as lease_cli
from supervisor import cli as supervisor_cli


def flanneld(argv: list[str], env: Mapping[str, str] | None = None) -> flannel_flags.Parsed:
    return flannel_flags.parse("flanneld", argv, env or {}, prog="flanneld")


GO_TRUE = ["1", "t", "T", "TRUE", "true", "True"]
GO_FALSE = ["0", "f", "F", "FALSE", "false", "False"]
NOT_GO = ["on", "off", "yes", "no", "y", "tRuE", " true", "2", "enabled"]

#: ip-masq through each CLI: how to read the parsed value back.
CLIS: dict[str, Callable[[list[str], dict[str, str]], Any]] = {
    "flanneld": lambda argv, env: "--ip-masq" in supervisor_cli.parse(argv, env).lease_args,
    "flannel-lease-service": lambda argv, env: lease_cli.parse(argv, env).ip_masq,
    "flannel-backend": lambda argv, env: backend_cli.parse(argv, env).ip_masq,
}


@pytest.mark.parametrize("cli", sorted(CLIS))
@pytest.mark.parametrize("text", GO_TRUE + GO_FALSE)
def test_go_booleans_mean_the_same_in_every_cli_as_a_flag_and_as_a_variable(cli: str, text: str) -> None:
    read = CLIS[cli]
    expected = text in GO_TRUE
    assert read([f"--ip-masq={text}"], {}) is expected
    assert read([f"-ip-masq={text}"], {}) is expected
    assert read([], {"FLANNELD_IP_MASQ": text}) is expected


@pytest.mark.parametrize("cli", sorted(CLIS))
@pytest.mark.parametrize("text", NOT_GO)
def test_other_spellings_of_a_boolean_are_refused_by_every_cli_naming_flag_and_value(
    cli: str, text: str
) -> None:
    read = CLIS[cli]
    with pytest.raises(flannel_flags.UsageError) as flag_error:
        read([f"--ip-masq={text}"], {})
    assert "--ip-masq" in str(flag_error.value) and repr(text) in str(flag_error.value)
    with pytest.raises(flannel_flags.UsageError) as env_error:
        read([], {"FLANNELD_IP_MASQ": text})
    assert "FLANNELD_IP_MASQ" in str(env_error.value) and repr(text) in str(env_error.value)


def test_a_bare_boolean_never_takes_the_next_word() -> None:
    got = flanneld(["--ip-masq", "--iface", "eth0", "-kube-subnet-mgr", "-v", "3"])
    assert got["ip-masq"] and got["kube-subnet-mgr"] and got["iface"] == ("eth0",) and got["v"] == 3
    with pytest.raises(flannel_flags.UsageError, match="unexpected argument 'false'"):
        flanneld(["--ip-masq", "false"])


def test_a_valued_flag_takes_the_next_word_even_when_it_starts_with_a_dash() -> None:
    assert flanneld(["--node-name", "-odd-name"])["node-name"] == "-odd-name"
    with pytest.raises(flannel_flags.UsageError, match=r"flag needs an argument: -etcd-prefix"):
        flanneld(["-etcd-prefix"])


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["--etcd-endpoint=http://10.0.0.1:2379"], "--etcd-endpoints"),
        (["-etcd-endpoint", "http://10.0.0.1:2379"], "-etcd-endpoints"),
        (["--ip-mas"], "--ip-masq"),
        (["--kube-subnet"], "--kube-subnet-mgr"),
        (["--zzz", "1"], ""),
    ],
)
def test_no_abbreviations_an_unknown_flag_is_named_with_a_hint(argv: list[str], hint: str) -> None:
    with pytest.raises(flannel_flags.UsageError) as error:
        flanneld(argv)
    message = str(error.value)
    assert message.startswith(f"unknown flag {argv[0].split('=')[0]}")
    assert (f"did you mean {hint}?" in message) if hint else ("did you mean" not in message)


@pytest.mark.parametrize("word", ["---iface", "-=x", "--=x"])
def test_bad_flag_syntax_is_named(word: str) -> None:
    with pytest.raises(flannel_flags.UsageError, match=re.escape(f"bad flag syntax: {word!r}")):
        flanneld([word])


def test_parsing_stops_at_a_double_dash_and_flags_after_it_are_arguments() -> None:
    with pytest.raises(flannel_flags.UsageError, match="unexpected argument '--ip-masq'"):
        flanneld(["--", "--ip-masq"])
    got = flannel_flags.parse("flanneld", ["--ip-masq", "--", "-x"], {}, prog="flanneld", positionals=True)
    assert got["ip-masq"] and got.positionals == ("-x",)


def test_a_repeated_flag_keeps_its_last_value_and_a_list_flag_keeps_them_all() -> None:
    got = flanneld(["--etcd-prefix", "/a", "--etcd-prefix=/b", "--iface", "eth0", "-iface=10.0.0.1"])
    assert got["etcd-prefix"] == "/b" and got["iface"] == ("eth0", "10.0.0.1")


def test_flags_win_over_variables_which_win_over_defaults_and_empty_variables_are_unset() -> None:
    env = {
        "FLANNELD_ETCD_PREFIX": "/env",
        "FLANNELD_IFACE": "eth8, eth9",
        "FLANNELD_HEALTHZ_PORT": "",
        "FLANNELD_IPTABLES_FORWARD_RULES": "false",
        "FLANNELD_V": "2",
    }
    got = flanneld(["--etcd-prefix", "/flag"], env)
    assert got["etcd-prefix"] == "/flag" and got["iface"] == ("eth8", "eth9") and got["healthz-port"] == 0
    assert got["iptables-forward-rules"] is False and got["v"] == 2
    assert flanneld(["--iface", "eth0"], env)["iface"] == ("eth0",)
    assert "healthz-port" not in got.given and "etcd-prefix" in got.given


def test_unknown_flanneld_variables_get_one_notice_naming_all_of_them() -> None:
    env = {
        "FLANNELD_NFTABLE": "true",
        "FLANNELD_METRICS_LISTEN": "127.0.0.1:9",
        "FLANNELD_IP_MASQ": "1",
        "FLANNELD_SETPRIV": "/usr/bin/setpriv",
        "NODE_NAME": "n1",
    }
    got = flanneld([], env)
    assert len(got.notices) == 1
    (notice,) = got.notices
    assert "FLANNELD_NFTABLE (did you mean FLANNELD_NFTABLES?)" in notice
    assert "FLANNELD_METRICS_LISTEN (did you mean FLANNELD_" in notice
    assert "FLANNELD_IP_MASQ" not in notice and "SETPRIV" not in notice and "NODE_NAME" not in notice


def test_nftables_and_metrics_variables_work_where_they_are_flags() -> None:
    env = {"FLANNELD_NFTABLES": "true", "FLANNELD_BACKEND_METRICS_LISTEN": "[::1]:9102"}
    config = supervisor_cli.parse([], env)
    assert config.backend_args == ("--nftables", "--metrics-listen", "[::1]:9102") and not config.notices
    backend = backend_cli.parse([], {"FLANNELD_NFTABLES": "t", "FLANNELD_METRICS_LISTEN": "127.0.0.1:9102"})
    assert backend.nftables and backend.metrics_listen == ("127.0.0.1", 9102) and not backend.notices


def test_a_child_run_alone_keeps_quiet_about_the_other_childs_variables() -> None:
    env = {"FLANNELD_IPTABLES_RESYNC": "10", "FLANNELD_ETCD_PREFIX": "/x", "FLANNELD_BOGUS": "1"}
    lease = lease_cli.parse([], env)
    assert lease.notices == (
        "ignoring environment variables that are not flags of this program: FLANNELD_BOGUS",
    )
    assert backend_cli.parse([], env).iptables_resync == 10


def test_the_supervisor_checks_a_childs_values_before_anything_starts() -> None:
    for argv, words in (
        (["--iptables-resync", "0"], ["--iptables-resync", "from 1 to 86400", "0"]),
        (["--subnet-lease-renew-margin", "1440"], ["--subnet-lease-renew-margin", "from 1 to 1439", "1440"]),
        (["--etcd-endpoints", "http://10.0.0.1:2379/v2"], ["--etcd-endpoints", "http://10.0.0.1:2379/v2"]),
        (["--iface-can-reach", "eth0"], ["--iface-can-reach", "IP address", "'eth0'"]),
        (["--kube-api-url", "10.0.0.1:6443"], ["--kube-api-url", "http://", "'10.0.0.1:6443'"]),
    ):
        with pytest.raises(supervisor_cli.ConfigError) as error:
            supervisor_cli.parse(argv, {})
        assert all(word in str(error.value) for word in words), (argv, str(error.value))


@pytest.mark.parametrize(
    "argv",
    [["-v=2"], ["--v=2"], ["-v", "2"], ["--v", "2"], ["-v", "-v"], ["--verbose", "--verbose"]],
)
def test_the_log_level_is_taken_as_flannel_writes_it_and_as_a_count(argv: list[str]) -> None:
    assert lease_cli.parse(argv, {}).verbosity == 2 == backend_cli.parse(argv, {}).verbosity


def test_hostile_words_are_named_shortened() -> None:
    for argv in (["--" + "x" * 5000], ["y" * 1_000_000], ["---" + "z" * 300]):
        with pytest.raises(flannel_flags.UsageError) as error:
            flanneld(argv)
        assert len(str(error.value)) < 200 and "characters)" in str(error.value)
    many = {f"FLANNELD_X{i}": "1" for i in range(1000)}
    (notice,) = flanneld([], many).notices
    assert len(notice) < 1000 and notice.endswith("and 980 more")


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("8471", 8471),
        ("0x2117", 8471),
        ("020427", 8471),
        ("0o20427", 8471),
        ("0b10000100010111", 8471),
        ("8_471", 8471),
        ("+8471", 8471),
    ],
)
def test_integers_are_read_as_go_reads_them(text: str, number: int) -> None:
    assert flanneld([f"--healthz-port={text}"])["healthz-port"] == number


@pytest.mark.parametrize("text", ["", " 1", "1e3", "08", "0x", "1__0", "1_", "ten", "9" * 30, "1.5"])
def test_what_go_does_not_read_as_an_integer_is_refused(text: str) -> None:
    with pytest.raises(flannel_flags.UsageError, match="--healthz-port: expected an integer"):
        flanneld([f"--healthz-port={text}"])
