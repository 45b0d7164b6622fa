"""Checks of the node that flannel makes at start and that we turn into one clear warning.

flannel exits when the ``br_netfilter`` module is not loaded (since Kubernetes 1.30 kubeadm no longer
checks it): without it, pod-to-service traffic across the ``cni0`` bridge bypasses iptables, so
kube-proxy's rules never see it. The overlay itself still works, so we warn instead of refusing to run.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

BRIDGE_SYSCTLS = Path("/proc/sys/net/bridge")


def br_netfilter_missing(*, ipv4: bool, ipv6: bool, root: Path = BRIDGE_SYSCTLS) -> list[str]:
    """The bridge-netfilter switches the enabled families need that do not exist (module not loaded)."""
    wanted = (["bridge-nf-call-iptables"] if ipv4 else []) + (["bridge-nf-call-ip6tables"] if ipv6 else [])
    return [str(root / name) for name in wanted if not (root / name).exists()]


def warn_if_br_netfilter_missing(*, ipv4: bool, ipv6: bool, root: Path = BRIDGE_SYSCTLS) -> bool:
    """Log one warning when :func:`br_netfilter_missing` finds anything; True when it did."""
    missing = br_netfilter_missing(ipv4=ipv4, ipv6=ipv6, root=root)
    if missing:
        log.warning(
            "br_netfilter is not loaded (%s missing): traffic between pods on the cni0 bridge will "
            "bypass iptables, so Kubernetes services may not work; run 'modprobe br_netfilter' "
            "(flannel refuses to start here)",
            ", ".join(missing),
        )
    return bool(missing)
