"""Nodes run by flanneld, as an operator runs them: crashes of either child, or both, and a stop and a
fresh start of flanneld itself, under a pod-to-pod ping every 10 ms that must not lose one reply."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from flannel_testkit.cluster import BackgroundPing, Cluster, Node, caps, kernel_objects
from flannel_testkit.processes import health_status
from flannel_testkit.wait import wait_until

pytestmark = pytest.mark.netns

NO_CAPS = "0000000000000000"
NET_CAPS = "0000000000003000"


def child_pids(node: Node, child: str) -> list[int]:
    """Pids of ``child`` (``lease-service``, ``backend``) in the order flanneld started them."""
    assert node.flanneld is not None
    return [int(pid) for pid in re.findall(rf"{child} started \(pid (\d+)\)", node.flanneld.log())]


def restarted(node: Node, child: str, before: int) -> int:
    """Wait for flanneld to start ``child`` again after pid ``before``; the new pid."""

    def new_pid() -> int | None:
        pids = child_pids(node, child)
        return pids[-1] if pids and pids[-1] != before else None

    return wait_until(
        new_pid,
        timeout=30,
        what=f"{child} restarted on {node.name}",
    )


def healthy(node: Node) -> None:
    wait_until(
        lambda: health_status(node.lease_socket) == "SERVING" == health_status(node.backend_socket),
        timeout=30,
        what=f"{node.name} both children SERVING",
    )


def test_crashes_of_either_child_or_both_and_a_flanneld_restart_lose_no_ping_and_change_no_kernel_object(
    tmp_path: Path,
) -> None:
    with Cluster(
        tmp_path,
        nodes=2,
        flanneld=True,
        flanneld_args=["--probe-interval", "0.2", "--restart-backoff-initial", "0.1"],
    ) as cluster:
        one, two = cluster.node(1), cluster.node(2)
        before = kernel_objects(one.ns)
        pinger = BackgroundPing(two.pod_ns, one.pod_ip, count=100_000, interval=0.01)  # until interrupted
        try:
            lease, backend = child_pids(one, "lease-service")[-1], child_pids(one, "backend")[-1]
            started = time.monotonic()
            os.kill(backend, signal.SIGKILL)
            backend = restarted(one, "backend", backend)
            healthy(one)
            assert child_pids(one, "lease-service")[-1] == lease, (
                "a backend crash must not restart the lease service"
            )
            assert caps(backend)["CapEff"] == NET_CAPS

            os.kill(lease, signal.SIGKILL)
            lease = restarted(one, "lease-service", lease)
            healthy(one)
            assert caps(lease)["CapEff"] == NO_CAPS

            os.kill(lease, signal.SIGKILL)
            os.kill(backend, signal.SIGKILL)
            lease, backend = restarted(one, "lease-service", lease), restarted(one, "backend", backend)
            healthy(one)
            assert caps(lease)["CapEff"] == NO_CAPS and caps(backend)["CapEff"] == NET_CAPS
            assert kernel_objects(one.ns) == before

            assert one.flanneld is not None
            assert one.flanneld.stop(signal.SIGTERM) == 0
            assert kernel_objects(one.ns) == before, "a stop must leave the dataplane as it is"
            one.flanneld.start()
            restarted(one, "backend", backend)
            healthy(one)
            assert kernel_objects(one.ns) == before, "a fresh flanneld adopts the dataplane without a change"
            took = time.monotonic() - started
        except BaseException:
            pinger.kill()
            raise
        pinger.proc.send_signal(signal.SIGINT)  # ping prints its totals and exits
        result = pinger.result(timeout=10)
        # pinging every 10 ms all along (half of it at least, the rest for a loaded machine), none lost; the
        # sequence takes ~1-2 s on a quiet machine since start-up got faster (a fixed 100 no longer held)
        assert result.sent >= took * 50 and result.lost == 0, (took, result.output)
