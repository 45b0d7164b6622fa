"""The lease service's own HTTP calls to the Kubernetes API, against the test API server (real etcd):
lists in consistent pages, watch lines, error answers, and heartbeats recognised without a lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.kubeapi import KubeApiControl, make_node, running
from lease_service.netconfig import parse_network_config
from lease_service.subnet.kube import KubeSubnetManager
from lease_service.subnet.kube_api import EVENT_DECODER, ApiStatus, KubeApi, view_of
from lease_service.subnet.kube_config import KubeConnection

P = "flannel.alpha.coreos.com/"
CONFIG = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')


@pytest.fixture
def api(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[KubeApiControl]:
    with running(etcd.endpoint, prefix, log_path=tmp_path / "apiserver.log") as server:
        yield server.control


def managed(name: str, cidr: str) -> dict[str, object]:
    return make_node(
        name,
        cidr,
        annotations={
            P + "kube-subnet-manager": "true",
            P + "backend-type": "vxlan",
            P + "public-ip": "192.168.70.9",
            P + "backend-data": '{"VNI":1}',
        },
    )


async def test_a_list_comes_in_pages_all_at_the_first_pages_version(api: KubeApiControl) -> None:
    for i in range(5):
        api.create_node(make_node(f"n{i}", f"10.244.{i}.0/24"))
    client = KubeApi(KubeConnection(api.url))
    try:
        pages = []
        async for page in client.list_nodes(page_size=2):
            pages.append(page)
            if len(pages) == 1:
                api.create_node(make_node("late", "10.244.9.0/24"))  # after the list's version: not in it
        assert [len(p.items) for p in pages] == [2, 2, 1]
        assert sorted(n.metadata.name for p in pages for n in p.items) == [f"n{i}" for i in range(5)]
        assert len({p.metadata.resourceVersion for p in pages}) == 1
        assert pages[0].items[0].spec.podCIDR == "10.244.0.0/24" and pages[0].items[0].metadata.uid
    finally:
        await client.close()


async def test_an_error_answer_names_the_status_and_message(api: KubeApiControl) -> None:
    client = KubeApi(KubeConnection(api.url))
    try:
        with pytest.raises(ApiStatus) as err:
            await client.get_node("missing")
        assert err.value.status == 404 and "missing" in err.value.message
        api.deny("list", "nodes")
        with pytest.raises(ApiStatus) as err:
            await anext(client.list_nodes())
        assert err.value.status == 403
    finally:
        await client.close()


async def test_the_watch_yields_one_line_per_event_and_heartbeats_change_no_lease(
    api: KubeApiControl,
) -> None:
    api.create_node(managed("n1", "10.244.1.0/24"))
    client = KubeApi(KubeConnection(api.url))
    manager = KubeSubnetManager(client, "n1")
    try:
        first = view_of(api.get_node("n1"))
        assert manager._changed(CONFIG, first) is not None  # a new node: its lease
        version = int(first.metadata.resourceVersion)
        api.patch_node(
            "n1",
            {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "beat"}]}},
            status=True,
        )
        api.patch_node("n1", {"metadata": {"annotations": {P + "public-ip": "192.168.70.10"}}}, status=True)
        events = []
        async for line in client.watch_nodes(version, timeout_seconds=1):
            event = EVENT_DECODER.decode(line)
            if event.type != "BOOKMARK":
                events.append(event)
            if len(events) == 2:
                break
        heartbeat, change = (manager._changed(CONFIG, e.object.node()) for e in events)
        assert heartbeat is None
        assert (
            change is not None and change[1] is not None and str(change[1].attrs.public_ip) == "192.168.70.10"
        )
    finally:
        await client.close()
