"""Full reconciles by the clock: drift is repaired every --resync-period even while leases keep changing."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from flannel_testkit.cluster import Cluster, ip, kernel_objects, ns_exec
from flannel_testkit.wait import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.etcd]

PERIOD = 2.0
PROBE_KEY = "10.244.240.0-24"
PROBE_SUBNET = "10.244.240.0/24"


@contextmanager
def churn(c: Cluster, per_second: float = 2.0) -> Iterator[list[int]]:
    """A probe lease written and deleted in etcd ``per_second`` times a second until the block ends."""
    value = json.dumps(
        {
            "PublicIP": f"{c.underlay}.97",
            "BackendType": "vxlan",
            "BackendData": {"VNI": 1, "VtepMAC": "0a:58:0a:f4:f0:01"},
        }
    )
    stop = threading.Event()
    writes = [0]
    failed: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.wait(1 / per_second):
                if writes[0] % 2 == 0:
                    c.etcd_put(f"{c.prefix}/subnets/{PROBE_KEY}", value)
                else:
                    c.etcd_delete(f"{c.prefix}/subnets/{PROBE_KEY}")
                writes[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="lease-churn", daemon=True)
    thread.start()
    try:
        yield writes
    finally:
        stop.set()
        thread.join(10)
        c.etcd_delete(f"{c.prefix}/subnets/{PROBE_KEY}")
    assert not failed, failed


def test_a_route_and_fdb_entry_deleted_by_hand_come_back_within_two_periods_under_lease_churn(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(2, backend_args=["--resync-period", str(PERIOD)])
    n1, n2 = c.node(1), c.node(2)
    mac = next(link["mac"] for link in kernel_objects(n2.ns)["links"])

    def has_route() -> bool:
        return n2.subnet in {r["dst"] for r in kernel_objects(n1.ns)["routes"]}

    def has_fdb() -> bool:
        return (mac, n2.public_ip) in {(f["mac"], f["dst"]) for f in kernel_objects(n1.ns)["fdb"]}

    assert has_route() and has_fdb()
    with churn(c) as writes:
        # the churn reaches the kernel as deltas: the probe route comes and goes
        wait_until(
            lambda: PROBE_SUBNET in {r["dst"] for r in kernel_objects(n1.ns)["routes"]},
            timeout=10,
            what="the churned lease routed",
        )
        # both commands fail unless the object was there: deleted by hand now
        ip(n1.ns, "route", "del", n2.subnet, "dev", "flannel.1")
        ns_exec(n1.ns, ["bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", n2.public_ip, "self"])
        wait_until(
            lambda: has_route() and has_fdb(),
            timeout=2 * PERIOD,
            what="the route and FDB entry restored by a full reconcile",
        )
        before = writes[0]
        wait_until(lambda: writes[0] >= before + 2, timeout=5, what="the churn still running")
    assert c.ping(n1, n2.pod_ip, 3).received == 3
