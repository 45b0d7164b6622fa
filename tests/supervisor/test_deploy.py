"""The deployment files, checked offline: the DaemonSet's privilege split, RBAC, the systemd unit."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor import cli
from tests.supervisor.harness import REPO, Flanneld, proc_status

MANIFEST = REPO / "deploy" / "kube-flannel-py.yml"
UNIT = REPO / "deploy" / "flanneld.service"


def _documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def _one(kind: str) -> dict[str, Any]:
    [doc] = [d for d in _documents() if d["kind"] == kind]
    return doc


def _pod() -> dict[str, Any]:
    return _one("DaemonSet")["spec"]["template"]["spec"]


def _container(name: str) -> dict[str, Any]:
    [container] = [c for c in _pod()["containers"] if c["name"] == name]
    return container


def test_every_document_has_the_expected_kind() -> None:
    kinds = sorted(d["kind"] for d in _documents())
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Namespace",
        "ServiceAccount",
    ]


def test_every_document_is_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in _documents():
        kubernetes_validate.validate(doc, "1.33", strict=True)


def test_the_lease_container_runs_as_non_root_with_no_capabilities() -> None:
    sc = _container("lease-service")["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")


def test_the_backend_container_is_uid_0_with_net_admin_and_net_raw_only() -> None:
    sc = _container("backend")["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")


def test_no_container_is_privileged_or_keeps_default_capabilities() -> None:
    pod = _pod()
    for container in pod["initContainers"] + pod["containers"]:
        sc = container["securityContext"]
        assert not sc.get("privileged"), container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]


def test_the_two_containers_share_the_socket_dir_through_an_empty_dir() -> None:
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    mounts = {
        name: {m["name"]: m["mountPath"] for m in _container(name)["volumeMounts"]}
        for name in ("lease-service", "backend")
    }
    assert "emptyDir" in volumes["sockets"]
    assert mounts["lease-service"]["sockets"] == mounts["backend"]["sockets"] == "/run/flannel-py"
    for name in ("lease-service", "backend"):
        assert "--run-dir=/run/flannel-py" in _container(name)["args"]
    # the lease socket's group (the lease uid's group) is a supplementary group of every container
    assert (
        _pod()["securityContext"]["fsGroup"] == _container("lease-service")["securityContext"]["runAsGroup"]
    )
    # every mount names a declared volume
    pod = _pod()
    for container in pod["initContainers"] + pod["containers"]:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, (container["name"], mount["name"])


def test_only_the_lease_container_sees_the_api_token() -> None:
    assert _pod()["automountServiceAccountToken"] is False
    assert _one("ServiceAccount")["automountServiceAccountToken"] is False
    token_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert token_path in [m["mountPath"] for m in _container("lease-service")["volumeMounts"]]
    pod = _pod()
    for container in pod["initContainers"] + [_container("backend")]:
        assert token_path not in [m["mountPath"] for m in container.get("volumeMounts", [])]


def test_rbac_is_what_flannel_needs_and_no_more() -> None:
    rules = {
        (tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in _one("ClusterRole")["rules"]
    }
    assert rules == {
        (("",), ("nodes",)): {"get", "list", "watch", "patch"},
        (("",), ("nodes/status",)): {"patch"},
    }
    binding = _one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": _one("ClusterRole")["metadata"]["name"],
    }
    account = _one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    assert _pod()["serviceAccountName"] == account["name"]


def test_the_config_map_holds_flannels_net_conf() -> None:
    config_map = _one("ConfigMap")
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    assert volumes["flannel-cfg"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert json.loads(config_map["data"]["net-conf.json"]) == {
        "Network": "10.244.0.0/16",
        "Backend": {"Type": "vxlan"},
    }
    assert json.loads(config_map["data"]["cni-conf.json"])["plugins"][0]["type"] == "flannel"
    lease_args = _container("lease-service")["args"]
    assert (
        "--kube-subnet-mgr" in lease_args
        and "--net-config-path=/etc/kube-flannel/net-conf.json" in lease_args
    )


class _CaseKeeping(configparser.ConfigParser):
    """systemd's keys are case-sensitive (``ExecStart``)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _unit() -> configparser.ConfigParser:
    parser = _CaseKeeping(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    return parser


def test_the_systemd_unit_starts_flanneld_with_valid_flags() -> None:
    unit = _unit()
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/flanneld")
    config = cli.parse(argv[1:], {})
    assert config.run_dir == Path("/run/flannel")
    assert unit["Service"]["KillSignal"] == "SIGTERM" and unit["Service"]["Restart"] == "on-failure"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "flanneld.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/flanneld", "/bin/true"))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr


def test_flanneld_works_within_the_units_capability_bounding_set(flanneld: Callable[..., Flanneld]) -> None:
    caps = _unit()["Service"]["CapabilityBoundingSet"].split()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    f = flanneld(
        prefix=["setpriv", "--no-new-privs", f"--bounding-set={bounding}", "--"],
        args=["--lease-group", "nogroup"],
    )
    [backend] = f.wait_pids("backend", 1)
    f.wait_http("/healthz", 200)
    assert proc_status(backend)["CapEff"] == "0000000000003000"
    f.signal(15)
    assert f.wait() == 0


def test_the_units_capabilities_suffice_to_stop_a_lease_service_of_another_uid(
    flanneld: Callable[..., Flanneld], open_dir: Path
) -> None:
    caps = _unit()["Service"]["CapabilityBoundingSet"].split()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    f = flanneld(
        prefix=["setpriv", "--no-new-privs", f"--bounding-set={bounding}", "--"],
        lease_cmd="/bin/sh -c 'echo lease up; exec sleep 60' lease",
        args=["--lease-user", "nobody", "--run-dir", str(open_dir / "run"), "--stop-grace", "20"],
    )
    f.wait_line("[lease-service] lease up")
    f.signal(15)
    assert f.wait() == 0
    assert any("lease-service (pid" in line and "stopped: killed by SIGTERM" in line for line in f.lines), (
        f.tail()
    )


# kube-flannel.yml's own names (flannel's Documentation/kube-flannel.yml): applying ours must change none of them
FLANNEL_NAMES = {
    ("Namespace", None, "kube-flannel"),
    ("ServiceAccount", "kube-flannel", "flannel"),
    ("ClusterRole", None, "flannel"),
    ("ClusterRoleBinding", None, "flannel"),
    ("ConfigMap", "kube-flannel", "kube-flannel-cfg"),
    ("DaemonSet", "kube-flannel", "kube-flannel-ds"),
}


def test_no_object_collides_with_an_existing_kube_flannel_install() -> None:
    ours = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in _documents()}
    assert not ours & FLANNEL_NAMES
    assert {d["metadata"].get("namespace") for d in _documents()} <= {None, "kube-flannel-py"}
    daemonset = _one("DaemonSet")
    # flannel's DaemonSet selects app=flannel: ours must not be picked up by it, nor pick up its pods
    assert daemonset["spec"]["selector"]["matchLabels"] == {"app": "flannel-py"}
    for doc in _documents():
        assert doc["metadata"].get("labels", {}).get("app") in (None, "flannel-py"), doc["metadata"]["name"]


def test_the_daemonset_runs_only_on_nodes_handed_over_with_the_opt_in_label() -> None:
    terms = _pod()["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert len(terms) == 1
    assert {"key": "flannel-py.io/agent", "operator": "In", "values": ["true"]} in terms[0][
        "matchExpressions"
    ]


def test_probes_run_flannelctl_health_on_each_containers_own_socket() -> None:
    for name, target in (("lease-service", "lease-service"), ("backend", "backend")):
        container = _container(name)
        run_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--run-dir="))
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = container[kind]["exec"]["command"]
            assert command[0] == "flannelctl" and command[-1] == target, (name, kind)
            assert f"--run-dir={run_dir}" in command
            assert ("--live" in command) == (kind != "readinessProbe"), (name, kind)
