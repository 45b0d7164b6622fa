"""flannel-cni run for real, as a runtime runs it: inside a node namespace with a hand-written
subnet.env, delegating to Debian's bridge and host-local plugins, into a pod namespace."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flannel_cni import SUPPORTED_VERSIONS
from flannel_testkit.cluster import ip, ip_json, ns_exec, ping
from flannel_testkit.cni import CNI_PLUGIN_DIR, cni_call, node_cni_config
from flannel_testkit.netns import Netns, create_netns, delete_netns

pytestmark = pytest.mark.netns

SUBNET_ENV = (
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ={masq}\n"
)


@dataclass
class Host:
    node: Netns
    run_dir: Path
    pods: list[Netns]

    def pod(self) -> Netns:
        made = create_netns(f"fpt{uuid.uuid4().hex[:6]}-cnipod")
        self.pods.append(made)
        return made

    def config(self, **delegate: Any) -> dict[str, Any]:
        return node_cni_config(self.run_dir, delegate=delegate or None)

    def call(self, command: str, pod: Netns | None, config: dict[str, Any], **kw: Any) -> Any:
        return cni_call(
            command,
            self.node.name,
            config,
            container_id=f"c-{pod.name}" if pod else "",
            netns=f"/run/netns/{pod.name}" if pod else "",
            **kw,
        )


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    if os.geteuid() != 0 or not (CNI_PLUGIN_DIR / "bridge").exists() or shutil.which("ip") is None:
        pytest.skip("needs root, iproute2 and containernetworking-plugins")
    node = create_netns(f"fpt{uuid.uuid4().hex[:6]}-cninode")
    (tmp_path / "subnet.env").write_text(SUBNET_ENV.format(masq="true"))
    made = Host(node, tmp_path, [])
    try:
        yield made
    finally:
        for pod in made.pods:
            delete_netns(pod)
        delete_netns(node)


def test_add_wires_the_pod_to_cni0_with_flannels_subnet_mtu_and_routes(host: Host) -> None:
    pod = host.pod()
    result = host.call("ADD", pod, host.config(hairpinMode=True, isDefaultGateway=True)).ok()
    assert result["cniVersion"] == "1.0.0"
    assert [entry["address"] for entry in result["ips"]] == ["10.244.7.2/24"]
    (bridge,) = ip_json(host.node.name, "addr", "show", "dev", "cni0")
    assert bridge["mtu"] == 1400 and [a["local"] for a in bridge["addr_info"] if a["family"] == "inet"] == [
        "10.244.7.1"
    ]
    (eth0,) = ip_json(pod.name, "addr", "show", "dev", "eth0")
    assert eth0["mtu"] == 1400
    routes = {r["dst"]: r.get("gateway") for r in ip_json(pod.name, "route", "show")}
    assert routes["default"] == routes["10.244.0.0/16"] == "10.244.7.1"
    ports = ip_json(host.node.name, "-d", "link", "show", "master", "cni0")
    assert len(ports) == 1 and ports[0]["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert ping(pod.name, "10.244.7.1", count=2).received == 2
    saved = json.loads((host.run_dir / "cni" / "flannel" / f"c-{pod.name}").read_text())
    assert (saved["type"], saved["ipMasq"], saved["isGateway"], saved["mtu"]) == ("bridge", False, True, 1400)
    # With FLANNEL_IPMASQ=true flanneld masquerades, so the bridge added no rules of its own.
    assert "CNI-" not in ns_exec(host.node.name, ["iptables-save", "-t", "nat"]).stdout


def test_check_passes_after_add_and_fails_when_the_nodes_subnet_changed(host: Host) -> None:
    pod = host.pod()
    config = host.config()
    result = host.call("ADD", pod, config).ok()
    with_prev = {**config, "prevResult": result}
    assert host.call("CHECK", pod, with_prev).returncode == 0
    (host.run_dir / "subnet.env").write_text(
        SUBNET_ENV.format(masq="true").replace("10.244.7.1", "10.244.9.1")
    )
    failed = host.call("CHECK", pod, with_prev)
    assert failed.returncode == 1 and failed.reply["code"] == 100 and "subnet changed" in failed.reply["msg"]
    (host.run_dir / "subnet.env").write_text(SUBNET_ENV.format(masq="true"))
    ip(pod.name, "addr", "flush", "dev", "eth0")
    flushed = host.call("CHECK", pod, with_prev)
    assert flushed.returncode == 1 and "lacks 10.244.7.2/24" in flushed.reply["msg"], flushed.reply
    ip(pod.name, "link", "del", "eth0")
    gone = host.call("CHECK", pod, with_prev)
    assert gone.returncode == 1 and "interface eth0 not found" in gone.reply["msg"], gone.reply
    (host.run_dir / "cni" / "networks" / "cbr0" / "10.244.7.2").unlink()  # host-local lost the reservation
    lost = host.call("CHECK", pod, with_prev)
    assert lost.returncode == 1 and "delegate host-local CHECK" in lost.reply["msg"], lost.reply


def test_del_uses_the_saved_config_releases_the_address_and_is_idempotent(host: Host) -> None:
    pod, config = host.pod(), host.config()
    host.call("ADD", pod, config).ok()
    allocations = host.run_dir / "cni" / "networks" / "cbr0"
    assert (allocations / "10.244.7.2").exists()
    (host.run_dir / "subnet.env").unlink()  # DEL needs no subnet.env: it delegates what ADD saved
    assert host.call("DEL", pod, config).ok() == {}
    assert not (allocations / "10.244.7.2").exists()
    assert not (host.run_dir / "cni" / "flannel" / f"c-{pod.name}").exists()
    assert not ip_json(pod.name, "link", "show", "dev", "eth0")
    assert host.call("DEL", pod, config).ok() == {}


def test_without_flanneld_masquerading_the_bridge_masquerades_traffic_leaving_the_network(host: Host) -> None:
    (host.run_dir / "subnet.env").write_text(SUBNET_ENV.format(masq="false"))
    pod = host.pod()
    host.call("ADD", pod, host.config()).ok()
    nat = ns_exec(host.node.name, ["iptables-save", "-t", "nat"]).stdout
    assert "-A POSTROUTING -s 10.244.7.2/32" in nat and "! -d 224.0.0.0/4" in nat and "-j MASQUERADE" in nat


def test_add_before_flanneld_wrote_subnet_env_says_try_again_later(host: Host) -> None:
    (host.run_dir / "subnet.env").unlink()
    failed = host.call("ADD", host.pod(), host.config())
    assert failed.returncode == 1
    assert failed.reply["code"] == 11 and "subnet.env does not exist" in failed.reply["msg"]
    status = host.call("STATUS", None, {**host.config(), "cniVersion": "1.1.0"})
    assert status.returncode == 1 and status.reply["code"] == 50 and status.reply["cniVersion"] == "1.1.0"
    (host.run_dir / "subnet.env").write_text(SUBNET_ENV.format(masq="true"))
    assert host.call("STATUS", None, {**host.config(), "cniVersion": "1.1.0"}).returncode == 0


def test_version_lists_every_spec_version_up_to_1_1_0(host: Host) -> None:
    reply = host.call("VERSION", None, {"cniVersion": "0.4.0"}).ok()
    assert reply == {"cniVersion": "0.4.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert SUPPORTED_VERSIONS[-1] == "1.1.0"


@pytest.mark.parametrize(
    ("env", "config", "code", "words"),
    [
        ({"CNI_COMMAND": "FROB"}, None, 4, "unknown CNI_COMMAND"),
        ({"CNI_NETNS": ""}, None, 4, "CNI_NETNS"),
        ({"CNI_CONTAINERID": "../../etc/passwd"}, None, 4, "invalid CNI_CONTAINERID"),
        ({"CNI_IFNAME": "eth0/../x"}, None, 4, "invalid CNI_IFNAME"),
        ({}, {"cniVersion": "2.0.0"}, 1, "incompatible CNI versions"),
        ({}, {"delegate": {"name": "mine"}}, 7, "'name'"),
        ({}, {"delegate": {"type": "no-such-plugin"}}, 4, "failed to find plugin 'no-such-plugin'"),
        ({}, {"delegate": {"type": "../bridge"}}, 7, "not a plain executable name"),
    ],
)
def test_bad_calls_are_cni_errors_with_the_specs_codes(
    host: Host, env: dict[str, str], config: dict[str, Any] | None, code: int, words: str
) -> None:
    pod = host.pod()
    full = host.config()
    if config:
        delegate = {**full["delegate"], **config.pop("delegate", {})}
        full = {**full, **config, "delegate": delegate}
    reply = cni_call(
        env.get("CNI_COMMAND", "ADD"),
        host.node.name,
        full,
        container_id=f"c-{pod.name}",
        netns=f"/run/netns/{pod.name}",
        extra_env=env,
    )
    assert reply.returncode == 1 and reply.reply is not None
    assert reply.reply["code"] == code and words in reply.reply["msg"], reply.reply
