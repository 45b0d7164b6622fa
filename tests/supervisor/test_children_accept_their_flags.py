"""What flanneld passes on is what the real children accept (their argparse parsers, not their logic)."""

from __future__ import annotations

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
    "--etcd-cafile",
    "/ca.pem",
    "--etcd-certfile",
    "/cert.pem",
    "--etcd-keyfile",
    "/key.pem",
    "--etcd-username",
    "flannel",
    "--etcd-password",
    "secret",
    "--kube-subnet-mgr",
    "--kubeconfig-file",
    "/kubeconfig",
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
    args = lease_cli.build_parser().parse_args(_program_args(privileges.lease_launch(config)))
    assert args.run_dir == str(tmp_path) and args.socket_group == "nogroup"
    assert args.metrics_listen == "127.0.0.1:9101"
    assert args.iface == ["eth0", "eth1"] and args.iface_regex == ["^en"] and args.verbose == 3
    assert (
        args.kube_subnet_mgr is True and args.ip_masq is True and args.set_node_network_unavailable is False
    )


def test_the_backend_accepts_every_flag_flanneld_passes(tmp_path: Path) -> None:
    backend_cli = pytest.importorskip("backend_service.cli")
    config = cli.parse(["--run-dir", str(tmp_path), *EVERY_FLAG], {})
    args = backend_cli.build_parser().parse_args(_program_args(privileges.backend_launch(config)))
    assert args.run_dir == str(tmp_path) and args.iface == "eth0" and args.public_ip == "10.0.0.2"
    assert args.ip_masq is True and args.verbose == 3 and args.metrics_listen == "127.0.0.1:9102"
