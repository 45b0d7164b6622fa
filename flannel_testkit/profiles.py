"""Host profiles for the namespace harness: nodes as unkind as real hosts, opt-in per test.

``Cluster(tmp_path, profile=TWO_NICS)``: each node has two NICs; the first (``eth0``) is on a dummy
network of its own and holds the default route (as a management NIC would), the underlay that joins
the nodes is on the SECOND (``eth1``). Nothing passes ``--iface``: the test chooses the underlay with
``--iface-regex`` / ``--iface-can-reach`` (a default-route choice would pick the dead ``eth0``).

``Cluster(tmp_path, profile=HostProfile(underlay_mtu=1400))``: every underlay link (bridge, veths)
has that MTU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostProfile:
    """How the harness builds each node's NICs."""

    name: str = "plain"
    two_nics: bool = False
    """eth0: a dummy network with the default route; eth1: the underlay."""
    underlay_mtu: int | None = None
    """MTU of the underlay bridge and every veth on it (None: the kernel's 1500)."""

    @property
    def underlay_ifname(self) -> str:
        return "eth1" if self.two_nics else "eth0"


PLAIN = HostProfile()
TWO_NICS = HostProfile("two-nics", two_nics=True)
MTU_1400 = HostProfile("mtu-1400", underlay_mtu=1400)
MTU_9000 = HostProfile("mtu-9000", underlay_mtu=9000)
