"""Host profiles for the namespace harness: node namespaces made as unkind as real hosts, opt-in per
test (``Cluster(..., host_profile=DOCKER_LIKE)``). Everything happens inside the node namespaces the
cluster creates, before flannel-py starts there; nothing touches the host's own network.

- ``DOCKER_LIKE``: FORWARD policy DROP (what Docker 1.13+ leaves), Docker's chains and jumps
  (``DOCKER-USER``, ``DOCKER``, ``DOCKER-ISOLATION-STAGE-1/2``, the ``docker0`` rules, the nat ``DOCKER``
  chain and masquerade) and a trailing ``-A FORWARD -j REJECT`` (firewalld/RHEL style), for IPv4 and,
  on dual-stack clusters, IPv6.
- ``NFTABLES_ONLY``: the backend runs with a PATH holding ``nft`` but no iptables binaries (a directory
  of symlinks), and the network config has ``"EnableNFTables": true``.
- ``NFT_ONLY_PATH``: the same PATH without ``EnableNFTables`` (iptables mode on such a host must fail
  with a clear message).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCKER_FILTER = """*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A FORWARD -j REJECT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""

DOCKER_NAT = """*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d {loopback} -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {bridge_net} ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
"""

NFT_ONLY_TOOLS = ("ip", "bridge", "setpriv", "sysctl", "nft")
"""What the backend (and ``ip netns exec``/``setpriv`` in front of it) may find on the nftables-only PATH."""


@dataclass(frozen=True)
class HostProfile:
    name: str
    iptables: str = ""
    """``iptables-restore --noflush`` input applied in every node before flannel-py starts."""
    ip6tables: str = ""
    """The same for ``ip6tables-restore`` (applied on dual-stack clusters)."""
    nft_only_path: bool = False
    """Run the backend with a PATH that has ``nft`` and no iptables binaries."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """Network config keys the profile sets."""

    def prepare_node(self, ns: str, ipv6: bool) -> None:
        """Apply the profile's rules inside node namespace ``ns``."""
        for tool, text in (
            ("iptables-restore", self.iptables),
            ("ip6tables-restore", self.ip6tables if ipv6 else ""),
        ):
            if text:
                subprocess.run(
                    ["ip", "netns", "exec", ns, tool, "--noflush"],
                    input=text,
                    text=True,
                    capture_output=True,
                    check=True,
                    timeout=30,
                )

    def backend_env(self, base_dir: Path) -> dict[str, str]:
        """Environment variables for the backend process."""
        if not self.nft_only_path:
            return {}
        bin_dir = base_dir / "nft-only-bin"
        if not bin_dir.exists():
            bin_dir.mkdir(parents=True)
            for tool in NFT_ONLY_TOOLS:
                real = shutil.which(tool)
                if real is None:
                    raise RuntimeError(f"host profile {self.name}: {tool} is not installed")
                (bin_dir / tool).symlink_to(real)
        return {"PATH": str(bin_dir)}


DOCKER_LIKE = HostProfile(
    "docker-like",
    iptables=DOCKER_FILTER + DOCKER_NAT.format(loopback="127.0.0.0/8", bridge_net="172.17.0.0/16"),
    ip6tables=DOCKER_FILTER + DOCKER_NAT.format(loopback="::1/128", bridge_net="fd17::/64"),
)
NFTABLES_ONLY = HostProfile("nftables-only", nft_only_path=True, config={"EnableNFTables": True})
NFT_ONLY_PATH = HostProfile("nft-only-path", nft_only_path=True)
