"""Node objects as the test API server keeps them: the JSON shape, valid names, and fixtures shaped
like kubelet's."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

JSON = dict[str, Any]

DEFAULT_USER = "system:serviceaccount:kube-flannel:flannel"

NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def make_node(
    name: str,
    pod_cidr: str | None = None,
    pod_cidrs: Sequence[str] | None = None,
    annotations: dict[str, str] | None = None,
    addresses: Sequence[JSON] | str | None = None,
    labels: dict[str, str] | None = None,
) -> JSON:
    """A Node as kubelet registers it (annotations are always present).

    ``pod_cidrs`` wins over ``pod_cidr``; ``spec.podCIDR`` is the first of them. ``addresses`` is a list
    of ``{"type", "address"}`` or just the InternalIP (default: 10.0.0.1); a Hostname address is added
    when none is given.
    """
    cidrs = list(pod_cidrs) if pod_cidrs is not None else ([pod_cidr] if pod_cidr else [])
    spec: JSON = {}
    if cidrs:
        spec = {"podCIDR": cidrs[0], "podCIDRs": cidrs}
    if addresses is None or isinstance(addresses, str):
        addrs: list[JSON] = [{"type": "InternalIP", "address": addresses or "10.0.0.1"}]
    else:
        addrs = [dict(a) for a in addresses]
    if not any(a.get("type") == "Hostname" for a in addrs):
        addrs.append({"type": "Hostname", "address": name})
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                **(annotations or {}),
            },
        },
        "spec": spec,
        "status": {
            "addresses": addrs,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": rfc3339_now(),
                    "lastTransitionTime": rfc3339_now(),
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name + ".boot")),
                "containerRuntimeVersion": "containerd://1.7.20",
                "kernelVersion": "6.1.0-fake",
                "kubeProxyVersion": "v1.31.0",
                "kubeletVersion": "v1.31.0",
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            },
        },
    }


def rfc3339_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
