"""Every flag of flannel's newest main.go is a flag of flanneld, with flannel's name, default and
environment variable, in both dash forms; and the table routes each to the process that acts on it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import flannel_flags
from flannel_flags.table import BY_NAME, FLAGS
from supervisor import cli

#: flannel's flags (main.go's flannelFlags, plus the klog flags it copies in): name → default, as
#: flannel prints it. An oracle written from flannel's sources, independent of our table.
FLANNEL: dict[str, str] = {
    "etcd-endpoints": "http://127.0.0.1:4001,http://127.0.0.1:2379",
    "etcd-prefix": "/coreos.com/network",
    "etcd-keyfile": "",
    "etcd-certfile": "",
    "etcd-cafile": "",
    "etcd-username": "",
    "etcd-password": "",
    "iface": "",
    "iface-regex": "",
    "iface-can-reach": "",
    "subnet-file": "/run/flannel/subnet.env",
    "public-ip": "",
    "public-ipv6": "",
    "subnet-lease-renew-margin": "60",
    "ip-masq": "false",
    "ip-masq-fully-random-disable": "false",
    "kube-subnet-mgr": "false",
    "kube-api-url": "",
    "kube-annotation-prefix": "flannel.alpha.coreos.com",
    "kubeconfig-file": "",
    "version": "false",
    "healthz-ip": "0.0.0.0",
    "healthz-port": "0",
    "iptables-resync": "5",
    "iptables-forward-rules": "true",
    "ip-blackhole-route": "false",
    "net-config-path": "/etc/kube-flannel/net-conf.json",
    "set-node-network-unavailable": "true",
    "v": "0",
    "vmodule": "",
    "log_backtrace_at": "",
}
BOOLEANS = {name for name, default in FLANNEL.items() if default in ("true", "false")}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {}
    for name in ("etcd-keyfile", "etcd-certfile", "etcd-cafile", "kubeconfig-file"):
        (tmp_path / name).write_text("x")
        made[name] = str(tmp_path / name)
    return made


def sample(name: str, files: dict[str, str]) -> str:
    return (
        files.get(name)
        or {
            "etcd-endpoints": "https://10.0.0.10:2379,http://[fd00::10]:2379",
            "etcd-prefix": "/my/net",
            "etcd-username": "flannel",
            "etcd-password": "secret",
            "iface": "eth1",
            "iface-regex": "^en.*",
            "iface-can-reach": "10.0.0.1",
            "subnet-file": "/tmp/subnet.env",
            "public-ip": "10.0.0.2",
            "public-ipv6": "fd00::2",
            "subnet-lease-renew-margin": "30",
            "kube-api-url": "https://10.0.0.1:6443",
            "kube-annotation-prefix": "example.com",
            "healthz-ip": "127.0.0.1",
            "healthz-port": "8471",
            "iptables-resync": "9",
            "net-config-path": "/etc/net-conf.json",
            "v": "4",
            "vmodule": "main=2",
            "log_backtrace_at": "main.go:10",
        }[name]
    )


def test_the_table_has_every_flannel_flag_and_marks_no_other_as_flannels() -> None:
    ours = {f.name for f in FLAGS if f.flannel} | {"version"}
    assert ours == set(FLANNEL)


@pytest.mark.parametrize("name", sorted(set(FLANNEL) - {"version"}))
def test_our_default_is_flannels(name: str) -> None:
    flag = BY_NAME[name]
    shown = flag.shown_default()
    if name == "subnet-file":  # RUN_DIR/subnet.env, which is flannel's with the default run dir
        assert shown.endswith(f"({FLANNEL[name]})")
    else:
        assert shown == FLANNEL[name]
    assert flag.env == "FLANNELD_" + name.upper().replace("-", "_")
    assert "flanneld" in flag.takers


@pytest.mark.parametrize("dashes", ["-", "--"])
@pytest.mark.parametrize("name", sorted(set(FLANNEL) - {"version"} - BOOLEANS))
def test_flanneld_takes_every_valued_flannel_flag_in_both_forms(
    name: str, dashes: str, files: dict[str, str]
) -> None:
    value = sample(name, files)
    separate = flannel_flags.parse("flanneld", [dashes + name, value], {}, prog="flanneld")
    joined = flannel_flags.parse("flanneld", [f"{dashes}{name}={value}"], {}, prog="flanneld")
    assert separate.values == joined.values and name in joined.given
    assert joined[name] != BY_NAME[name].default


@pytest.mark.parametrize("dashes", ["-", "--"])
@pytest.mark.parametrize("name", sorted(BOOLEANS - {"version"}))
def test_flanneld_takes_every_flannel_boolean_bare_and_with_a_value(name: str, dashes: str) -> None:
    assert flannel_flags.parse("flanneld", [dashes + name], {}, prog="flanneld")[name] is True
    assert flannel_flags.parse("flanneld", [f"{dashes}{name}=false"], {}, prog="flanneld")[name] is False
    assert flannel_flags.parse("flanneld", [f"{dashes}{name}=1"], {}, prog="flanneld")[name] is True


def test_every_flannel_flag_reaches_the_process_that_acts_on_it(files: dict[str, str]) -> None:
    argv = []
    for name in sorted(set(FLANNEL) - {"version"}):
        argv += [f"--{name}"] if name in BOOLEANS else [f"--{name}", sample(name, files)]
    config = cli.parse(argv, {})
    lease, backend = " ".join(config.lease_args), " ".join(config.backend_args)
    for name in (
        "etcd-endpoints",
        "etcd-prefix",
        "etcd-keyfile",
        "etcd-certfile",
        "etcd-cafile",
        "etcd-username",
        "etcd-password",
        "iface",
        "iface-regex",
        "iface-can-reach",
        "public-ip",
        "public-ipv6",
        "subnet-file",
        "subnet-lease-renew-margin",
        "kube-subnet-mgr",
        "kube-api-url",
        "kube-annotation-prefix",
        "kubeconfig-file",
        "net-config-path",
        "set-node-network-unavailable",
    ):
        assert f"--{name}" in config.lease_args and f"--{name}" not in config.backend_args, name
    for name in (
        "iptables-resync",
        "iptables-forward-rules",
        "ip-masq-fully-random-disable",
        "ip-blackhole-route",
    ):
        assert f"--{name}" in config.backend_args and f"--{name}" not in config.lease_args, name
    # the interface is decided once, by the lease service, and handed to the backend through the contract
    assert "--ip-masq" in config.lease_args and "--ip-masq" in config.backend_args
    for name in ("healthz-ip", "healthz-port", "vmodule", "log_backtrace_at"):
        assert name not in lease + backend
    assert config.healthz_ip == ipaddress.ip_address("127.0.0.1") and config.healthz_port == 8471
    assert config.lease_args.count("-v") == 4 == config.backend_args.count("-v")
    assert any("--vmodule" in n and "no effect" in n for n in config.notices)


def test_a_flag_left_at_flannels_default_is_not_passed_on() -> None:
    config = cli.parse(["--iptables-forward-rules=true", "--ip-masq=false", "--iptables-forward-rules=0"], {})
    assert config.backend_args == ("--iptables-forward-rules=false",)
    assert cli.parse(["--iptables-forward-rules"], {}).backend_args == ("--iptables-forward-rules",)


def test_version_is_not_read_from_the_environment_and_needs_a_true_value() -> None:
    assert flannel_flags.parse("flanneld", [], {"FLANNELD_VERSION": "true"}, prog="flanneld").notices
    flannel_flags.parse("flanneld", ["--version=false"], {}, prog="flanneld")
    with pytest.raises(flannel_flags.Done) as done:
        flannel_flags.parse("flanneld", ["-version"], {}, prog="flanneld")
    assert done.value.text == flannel_flags.version() != "unknown"


def test_every_row_is_taken_by_some_process_and_routed_only_to_children_that_take_it() -> None:
    for flag in FLAGS:
        assert flag.takers, flag.name
        for child in flag.children:
            name = flag.child_name or flag.name
            assert any(f.name == name and child in f.takers for f in FLAGS), (flag.name, child)
