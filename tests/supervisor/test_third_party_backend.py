"""flanneld --backend-cmd runs a third-party backend in place of ours, under the same privilege rules."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from flannel_testkit.cluster import Cluster, caps
from flannel_testkit.wait import wait_until

pytestmark = pytest.mark.netns

# The extension example's network config (tools/run-tests runs the conformance kit against it too).
EXTENSION = {
    "Type": "extension",
    "PreStartupCommand": "echo extension-data",
    "SubnetAddCommand": "ip route replace $SUBNET via $PUBLIC_IP",
    "SubnetRemoveCommand": "ip route del $SUBNET via $PUBLIC_IP",
}


def test_flanneld_runs_the_extension_example_with_only_net_admin_and_net_raw(tmp_path: Path) -> None:
    command = shlex.join([sys.executable, "-m", "examples.extension_backend"])
    config = {"Network": "10.244.0.0/16", "SubnetMax": "10.244.199.0", "Backend": EXTENSION}
    with Cluster(
        tmp_path, nodes=2, config=config, flanneld=True, flanneld_args=["--backend-cmd", command]
    ) as cluster:
        one, two = cluster.node(1), cluster.node(2)
        assert cluster.ping(one, two.pod_ip, count=5).received == 5
        assert one.flanneld is not None
        flanneld = one.flanneld
        match = wait_until(
            lambda: re.search(r"backend started \(pid (\d+)\)", flanneld.log()),
            what="the backend's pid in flanneld's log",
        )
        held = caps(int(match.group(1)))
        assert held["CapEff"] == held["CapBnd"] == held["CapAmb"] == "0000000000003000", held
        assert held["NoNewPrivs"] == "1"
        assert "extension-backend" in flanneld.log()
