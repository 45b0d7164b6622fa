"""The fake API server, driven with the official client (kubernetes.aio): it must keep the list/watch
semantics the kube subnet manager relies on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kubernetes.aio import client as kclient
from kubernetes.aio import watch as kwatch
from kubernetes.aio.client.exceptions import ApiException

from tests.support.etcd import EtcdServer
from tests.support.fake_apiserver import ApiServerProcess, make_node, running


@pytest.fixture
def api(etcd: EtcdServer, prefix: str) -> Iterator[ApiServerProcess]:
    with running(etcd.endpoint, prefix) as server:
        yield server


def core(api: ApiServerProcess) -> kclient.CoreV1Api:
    return kclient.CoreV1Api(kclient.ApiClient(kclient.Configuration(host=api.url)))


async def collect(api: ApiServerProcess, rv: str, until: int, **kwargs: object) -> list[tuple[str, str]]:
    v1 = core(api)
    seen: list[tuple[str, str]] = []
    async with kwatch.Watch(return_type="object") as w:
        async for event in w.stream(v1.list_node, resource_version=rv, timeout_seconds=5, **kwargs):
            seen.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
            if len([s for s in seen if s[0] != "BOOKMARK"]) >= until:
                break
    await v1.api_client.close()
    return seen


async def test_list_then_watch_sees_added_modified_deleted_in_order(api: ApiServerProcess) -> None:
    api.create_node(make_node("n1", "10.244.1.0/24"))
    v1 = core(api)
    listing = await v1.list_node()
    await v1.api_client.close()
    assert [n.metadata.name for n in listing.items] == ["n1"]
    rv = listing.metadata.resource_version
    api.create_node(make_node("n2"))
    api.patch_node("n1", {"metadata": {"annotations": {"a": "b"}}}, status=True)
    api.delete_node("n2")
    events = await collect(api, rv, 3)
    assert [e for e in events if e[0] != "BOOKMARK"] == [("ADDED", "n2"), ("MODIFIED", "n1"), ("DELETED", "n2")]


async def test_an_idle_watch_gets_bookmarks(api: ApiServerProcess) -> None:
    v1 = core(api)
    rv = (await v1.list_node()).metadata.resource_version
    await v1.api_client.close()
    seen = await asyncio.wait_for(collect(api, rv, 0, allow_watch_bookmarks=True), 10)
    assert seen and all(kind == "BOOKMARK" for kind, _ in seen)


async def test_a_compacted_resource_version_is_a_410(api: ApiServerProcess) -> None:
    api.create_node(make_node("n1"))
    v1 = core(api)
    rv = (await v1.list_node()).metadata.resource_version
    await v1.api_client.close()
    api.create_node(make_node("n2"))
    api.compact()
    with pytest.raises(ApiException) as err:
        await collect(api, rv, 1)
    assert err.value.status == 410


def test_status_patches_merge_conditions_by_type_and_keep_the_spec(api: ApiServerProcess) -> None:
    api.create_node(make_node("n1", "10.244.1.0/24"))
    patched = api.patch_node("n1", {"spec": {"podCIDR": "1.2.3.0/24"}, "metadata": {"annotations": {"x": "y"}},
                                    "status": {"conditions": [{"type": "NetworkUnavailable", "status": "False"}]}},
                             status=True)
    assert patched["spec"]["podCIDR"] == "10.244.1.0/24"
    assert patched["metadata"]["annotations"]["x"] == "y"
    assert patched["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] == "0"
    assert {c["type"] for c in patched["status"]["conditions"]} == {"Ready", "NetworkUnavailable"}
    main = api.patch_node("n1", {"spec": {"podCIDR": "10.244.9.0/24"}, "status": {"conditions": []}},
                          content_type="application/merge-patch+json")
    assert main["spec"]["podCIDR"] == "10.244.9.0/24" and len(main["status"]["conditions"]) == 2


def test_errors_are_status_objects(api: ApiServerProcess) -> None:
    assert api.get_node("ghost")["code"] == 404
    api.create_node(make_node("n1"))
    assert api.create_node(make_node("n1"))["reason"] == "AlreadyExists"
    api.deny("patch", "nodes/status")
    denied = api.patch_node("n1", {"metadata": {"annotations": {"a": "b"}}}, status=True)
    assert denied["code"] == 403 and "cannot patch resource" in denied["message"]
    api.allow_all()
    assert api.patch_node("n1", {"metadata": {"annotations": {"a": "b"}}}, status=True)["metadata"]["annotations"]["a"] == "b"
