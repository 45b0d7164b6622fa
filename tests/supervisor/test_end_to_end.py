"""flanneld with the REAL lease service and backend, as one node of a namespace cluster beside a node
run without it: the overlay works, a killed backend comes back alone, a stop leaves the dataplane."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from flannel_testkit.cluster import Cluster, ip, ns_exec, ping, read_subnet_env
from flannel_testkit.wait import wait_until
from tests.supervisor.harness import Flanneld, alive

pytestmark = [
    pytest.mark.netns,
    pytest.mark.etcd,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("etcd") is None, reason="needs root and etcd"),
]


def test_a_node_run_by_flanneld_joins_the_overlay_and_survives_restarts(
    flanneld: Callable[..., Flanneld], tmp_path: Path
) -> None:
    with Cluster(tmp_path / "cluster", nodes=1) as cluster:
        peer = cluster.node(1)
        ns = cluster._add_ns(f"fpt{cluster.id}-f")
        cluster._attach(ns, "nf", f"{cluster.underlay}.9/24")
        ns_exec(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        assert cluster.etcd is not None
        f = flanneld(
            real_children=True,
            prefix=["ip", "netns", "exec", ns],
            netns=ns,
            args=[
                "--etcd-endpoints",
                cluster.etcd.endpoint,
                "--etcd-prefix",
                cluster.prefix,
                "--iface",
                "eth0",
                "--probe-interval",
                "0.2",
                "--startup-timeout",
                "30",
            ],
        )
        f.wait_http("/healthz", 200, timeout=60)
        [lease] = f.started("lease-service")
        [backend] = f.started("backend")
        env = read_subnet_env(f.run_dir / "subnet.env")
        vtep = env["FLANNEL_SUBNET"].split("/")[0].rsplit(".", 1)[0] + ".0"  # flannel.1 holds <subnet>.0/32

        # the peer's pod reaches this node's VXLAN address across the underlay
        wait_until(
            lambda: ping(peer.pod_ns, vtep, count=1, timeout=1).received == 1,
            timeout=30,
            what=f"ping {vtep} from {peer.name}'s pod; {f.tail()}",
        )

        # a killed backend comes back alone; the overlay works again
        os.kill(backend, signal.SIGKILL)
        f.wait_line("backend (killed by SIGKILL) exited")
        f.wait_started("backend", 2)
        f.wait_http("/healthz", 200, timeout=60)
        assert f.started("lease-service") == [lease] and alive(lease)
        wait_until(lambda: ping(peer.pod_ns, vtep, count=1, timeout=1).received == 1, timeout=30)

        # a stop ends backend then lease service, and leaves the dataplane in place
        f.signal(signal.SIGTERM)
        assert f.wait(timeout=40) == 0
        stopped = [line for line in f.lines if "stopped: " in line and "[flanneld]" in line]
        assert [("backend" in line, "lease-service" in line) for line in stopped[-2:]] == [
            (True, False),
            (False, True),
        ]
        assert "flannel.1" in ip(ns, "-o", "link", "show")
        assert ping(peer.pod_ns, vtep, count=1, timeout=1).received == 1
