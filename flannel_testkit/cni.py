"""Pods made as kubelet makes them: through CNI, with ``flannel-cni`` delegating to the real ``bridge``
and ``host-local`` plugins (Debian's containernetworking-plugins in ``/usr/lib/cni``).

Each node gets kube-flannel's CNI config (``hairpinMode``, ``isDefaultGateway``) pointed at its own
``subnet.env``, with the plugin's ``dataDir`` and host-local's ``dataDir`` under the node's run dir,
never ``/var/lib/cni`` on the host. The plugin runs inside the node's network namespace, where the
bridge ``cni0`` and the host ends of the veths live.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CNI_PLUGIN_DIR = Path("/usr/lib/cni")
NETWORK_NAME = "cbr0"  # kube-flannel's


def flannel_cni_binary() -> Path:
    """The ``flannel-cni`` console script beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "flannel-cni"
    if beside.exists():
        return beside
    found = shutil.which("flannel-cni")
    if found is None:
        raise RuntimeError("flannel-cni not found: pip install flannel-py (it installs the console script)")
    return Path(found)


def cni_path() -> str:
    """``CNI_PATH``: where flannel-cni is, then the delegate plugins."""
    if not (CNI_PLUGIN_DIR / "bridge").exists():
        raise RuntimeError(
            f"no bridge plugin in {CNI_PLUGIN_DIR}: apt-get install containernetworking-plugins"
        )
    return f"{flannel_cni_binary().parent}:{CNI_PLUGIN_DIR}"


def node_cni_config(
    run_dir: Path, *, delegate: dict[str, Any] | None = None, cni_version: str = "1.0.0"
) -> dict[str, Any]:
    """kube-flannel's flannel entry (``type`` is the plugin's name here), with the node's own files."""
    return {
        "cniVersion": cni_version,
        "name": NETWORK_NAME,
        "type": "flannel-cni",
        "subnetFile": str(run_dir / "subnet.env"),
        "dataDir": str(run_dir / "cni" / "flannel"),
        "ipam": {"dataDir": str(run_dir / "cni" / "networks")},
        "delegate": {"hairpinMode": True, "isDefaultGateway": True, **(delegate or {})},
    }


@dataclass(frozen=True)
class CniReply:
    returncode: int
    reply: dict[str, Any] | None
    stderr: str

    def ok(self) -> dict[str, Any]:
        """The reply of a call that must have succeeded (an empty dict when it printed nothing)."""
        if self.returncode != 0:
            raise RuntimeError(f"flannel-cni failed ({self.returncode}): {self.reply}\n{self.stderr}")
        return self.reply or {}


def cni_call(
    command: str,
    node_ns: str,
    config: dict[str, Any],
    *,
    container_id: str = "",
    netns: str = "",
    ifname: str = "eth0",
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
) -> CniReply:
    """Run ``flannel-cni`` with ``CNI_COMMAND=command`` inside ``node_ns`` as a runtime would."""
    env = {**os.environ, "CNI_COMMAND": command, "CNI_PATH": cni_path()}
    for name, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname)):
        if value and command not in ("VERSION", "STATUS", "GC"):
            env[name] = value
    env.update(extra_env or {})
    proc = subprocess.run(
        ["ip", "netns", "exec", node_ns, str(flannel_cni_binary())],
        input=json.dumps(config).encode(),
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout.strip()
    return CniReply(proc.returncode, json.loads(out) if out else None, proc.stderr.decode(errors="replace"))


def pod_address(result: dict[str, Any], version: int) -> str | None:
    """The pod's address of one IP family (``10.244.3.2/24``) from an ADD result."""
    for entry in result.get("ips", []):
        if (":" in entry["address"]) == (version == 6):
            return str(entry["address"])
    return None
