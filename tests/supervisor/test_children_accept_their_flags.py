"""What flanneld passes on is what the real children accept (their own flag parsing, not their logic)."""

from __future__ import annotations

import grp
import ipaddress
from pathlib import Path

import pytest

from supervisor import cli, privileges

EVERY_FLAG = [
    "--lease-metrics-listen",
    "127.0.0.1:9101",
    "--backend-metrics-listen",
    "127.0.0.1:9102",
    "--etcd-endpoints",
    "https://10.0.0.10:2379",
    "--etcd-prefix",
    "/coreos.com/network",
    "--etcd-username",
    "flannel",
    "--etcd-password",
    "secret",
    "--kube-subnet-mgr",
    "--kube-api-url",
    "https://10.0.0.1:6443",
    "--node-name",
    "n1",
    "--kube-annotation-prefix",
    "example.com",
    "--set-node-network-unavailable=false",
    "--net-config-path",
    "/net-conf.json",
    "--public-ip",
    "10.0.0.2",
    "--public-ipv6",
    "fd00::2",
    "--iface",
    "eth0",
    "--iface",
    "eth1",
    "--iface-regex",
    "^en",
    "--iface-can-reach",
    "10.0.0.9",
    "--iptables-resync",
    "7",
    "--iptables-forward-rules=false",
    "-ip-masq-fully-random-disable",
    "-ip-blackhole-route=true",
    "--nftables",
    "--resync-period",
    "12",
    "--subnet-file",
    "/run/flannel/subnet.env",
    "--subnet-lease-renew-margin",
    "30",
    "--ip-masq",
    "--grpc-listen",
    "127.0.0.1:9999",
    "-v",
    "3",
    "--lease-group",
    "nogroup",
]


def _program_args(launch: privileges.Launch) -> list[str]:
    argv = list(launch.argv)
    return argv[argv.index("-m") + 2 :]


def test_the_lease_service_accepts_every_flag_flanneld_passes(tmp_path: Path) -> None:
    lease_cli = pytest.importorskip("lease_service.cli")
    config = cli.parse(["--run-dir", str(tmp_path), *EVERY_FLAG], {})
    launch = privileges.lease_launch(config)
    settings = lease_cli.parse(_program_args(launch), dict(launch.secrets))
    assert settings.run_dir == tmp_path and settings.socket_gid == grp.getgrnam("nogroup").gr_gid
    assert settings.metrics_listen == ("127.0.0.1", 9101) and settings.etcd.password == "secret"
    assert settings.ifaces == ("eth0", "eth1") and settings.iface_regexes == ("^en",)
    assert settings.verbosity == 3
    assert settings.iface_can_reach == ipaddress.ip_address("10.0.0.9")
    assert settings.kube_subnet_mgr and settings.ip_masq and settings.kube.set_network_unavailable is False
    assert settings.renew_margin == 30 * 60 and settings.etcd.endpoints == ("https://10.0.0.10:2379",)


def test_the_backend_accepts_every_flag_flanneld_passes(tmp_path: Path) -> None:
    backend_cli = pytest.importorskip("backend_service.cli")
    config = cli.parse(["--run-dir", str(tmp_path), *EVERY_FLAG], {})
    settings = backend_cli.parse(_program_args(privileges.backend_launch(config)), {})
    assert settings.run_dir == tmp_path
    assert not hasattr(settings, "iface") and not hasattr(settings, "public_ip")  # the lease service decides
    assert settings.ip_masq and settings.verbosity == 3 and settings.metrics_listen == ("127.0.0.1", 9102)
    assert settings.iptables_resync == 7 and settings.iptables_forward_rules is False
    assert settings.ip_masq_fully_random_disable and settings.ip_blackhole_route
    assert settings.nftables and settings.resync_period == 12
