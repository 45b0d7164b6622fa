# mypy: disable-error-code="union-attr, index, operator, arg-type, attr-defined"
# (the client models make every field Optional)
"""The test Kubernetes API server (flannel_testkit/kubeapi/), driven with the official client
(``kubernetes.aio``): list/watch semantics, patches, the status subresource and errors as the kube
subnet manager will meet them."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client as kc
from kubernetes.aio import watch as kw
from kubernetes.aio.client.exceptions import ApiException

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.kubeapi import (
    JSON_PATCH,
    MERGE_PATCH,
    AsyncKubeApiControl,
    KubeApiControl,
    KubeApiError,
    KubeApiProcess,
    KubeApiServer,
    json_patch,
    make_node,
    merge_patch,
    running,
    strategic_merge_patch,
)
from flannel_testkit.wait import async_wait_until

pytestmark = pytest.mark.etcd

SMP = "application/strategic-merge-patch+json"


@pytest.fixture
def api(etcd: EtcdServer, prefix: str) -> Iterator[KubeApiProcess]:
    with running(etcd.endpoint, "/registry" + prefix) as server:
        yield server


@pytest.fixture
async def v1(api: KubeApiProcess) -> AsyncIterator[kc.CoreV1Api]:
    client = kc.ApiClient(kc.Configuration(host=api.url))
    try:
        yield kc.CoreV1Api(client)
    finally:
        await client.close()


def node_body(name: str, **kwargs: Any) -> Any:
    return make_node(name, **kwargs)


async def watch_events(
    v1: kc.CoreV1Api, rv: str, until: int, timeout: int = 10, **kwargs: Any
) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of events until ``until`` non-BOOKMARK events were seen."""
    seen: list[tuple[str, str, str]] = []
    async with kw.Watch() as w:
        async for event in w.stream(v1.list_node, resource_version=rv, timeout_seconds=timeout, **kwargs):
            meta = event["raw_object"]["metadata"]
            seen.append((event["type"], meta.get("name", ""), meta["resourceVersion"]))
            if sum(1 for s in seen if s[0] != "BOOKMARK") >= until:
                break
    return seen


# ---- discovery ------------------------------------------------------------------------------------


async def test_discovery_answers_like_an_api_server(api: KubeApiProcess, v1: kc.CoreV1Api) -> None:
    client = v1.api_client
    version = await kc.VersionApi(client).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")
    assert (await kc.CoreApi(client).get_api_versions()).versions == ["v1"]
    resources = await v1.get_api_resources()
    assert {r.name for r in resources.resources} == {"nodes", "nodes/status"}
    assert (await kc.ApisApi(client).get_api_versions()).groups == []


# ---- list and watch -------------------------------------------------------------------------------


async def test_watch_from_a_listed_version_sees_every_change_in_order_with_bookmarks(
    api: KubeApiProcess, v1: kc.CoreV1Api
) -> None:
    control = api.control
    control.create_node(node_body("n1", pod_cidr="10.244.1.0/24"))
    listing = await v1.list_node()
    assert [n.metadata.name for n in listing.items] == ["n1"]
    rv = listing.metadata.resource_version
    assert int(rv) == int(listing.items[0].metadata.resource_version)

    added = control.create_node(node_body("n2"))
    modified = control.patch_node("n1", {"metadata": {"annotations": {"a": "b"}}}, status=True)
    last_n2 = control.patch_node("n2", {"metadata": {"labels": {"x": "y"}}})
    deleted = control.delete_node("n2")
    assert deleted["status"] == "Success"

    events = await watch_events(v1, rv, 4, allow_watch_bookmarks=True)
    changes = [e for e in events if e[0] != "BOOKMARK"]
    assert changes[:3] == [
        ("ADDED", "n2", added["metadata"]["resourceVersion"]),
        ("MODIFIED", "n1", modified["metadata"]["resourceVersion"]),
        ("MODIFIED", "n2", last_n2["metadata"]["resourceVersion"]),
    ]
    kind, name, deleted_rv = changes[3]
    assert (kind, name) == ("DELETED", "n2") and int(deleted_rv) > int(last_n2["metadata"]["resourceVersion"])

    # an idle watch from the deletion gets bookmarks about every second, each one fresher
    async with kw.Watch() as w:
        bookmarks: list[int] = []
        async for event in w.stream(
            v1.list_node, resource_version=deleted_rv, allow_watch_bookmarks=True, timeout_seconds=4
        ):
            assert event["type"] == "BOOKMARK", event
            assert event["raw_object"] == {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": event["raw_object"]["metadata"]["resourceVersion"]},
            }
            bookmarks.append(int(event["raw_object"]["metadata"]["resourceVersion"]))
        assert w.resource_version == str(bookmarks[-1])
    assert len(bookmarks) >= 2 and bookmarks == sorted(set(bookmarks)) and bookmarks[0] > int(deleted_rv)


async def test_deleted_carries_the_last_state_even_for_a_watch_started_after_it(
    api: KubeApiProcess, v1: kc.CoreV1Api
) -> None:
    control = api.control
    rv = (await v1.list_node()).metadata.resource_version
    control.create_node(node_body("n1", annotations={"k": "v"}))
    control.delete_node("n1")
    events = [e async for e in _raw_watch(api, rv, 2)]
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]
    assert events[1]["object"]["metadata"]["annotations"]["k"] == "v"
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) > int(
        events[0]["object"]["metadata"]["resourceVersion"]
    )


async def _raw_watch(api: KubeApiProcess, rv: str, count: int) -> AsyncIterator[dict[str, Any]]:
    params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "5"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{api.url}/api/v1/nodes", params=params) as resp,
    ):
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
        for _ in range(count):
            line = await resp.content.readline()
            yield json.loads(line)


async def test_a_watch_without_a_version_starts_with_the_current_nodes(
    api: KubeApiProcess, v1: kc.CoreV1Api
) -> None:
    control = api.control
    control.create_node(node_body("a"))
    control.create_node(node_body("b"))
    for rv in ("0", ""):
        kwargs: dict[str, Any] = {"resource_version": rv} if rv else {}
        events = []
        async with kw.Watch() as w:
            async for event in w.stream(v1.list_node, timeout_seconds=30, **kwargs):
                events.append((event["type"], event["object"].metadata.name))
                if rv and len(events) == 2:
                    # the watch is open and has sent the current Nodes: a change now is an event on it
                    await asyncio.to_thread(
                        control.patch_node, "a", {"metadata": {"annotations": {"x": "1"}}}
                    )
                if rv and len(events) == 3 or not rv and len(events) == 2:
                    break
        if rv:
            assert events == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a")]
        else:
            assert sorted(events) == [("ADDED", "a"), ("ADDED", "b")]


async def test_selectors_filter_lists_and_watches(api: KubeApiProcess, v1: kc.CoreV1Api) -> None:
    control = api.control
    control.create_node(node_body("n1", labels={"role": "edge"}))
    control.create_node(node_body("n2"))
    by_name = await v1.list_node(field_selector="metadata.name=n2")
    assert [n.metadata.name for n in by_name.items] == ["n2"]
    by_label = await v1.list_node(label_selector="role=edge")
    assert [n.metadata.name for n in by_label.items] == ["n1"]
    assert [n.metadata.name for n in (await v1.list_node(label_selector="!role")).items] == ["n2"]
    with pytest.raises(ApiException) as err:
        await v1.list_node(field_selector="spec.unschedulable=true")
    assert err.value.status == 400
    rv = by_name.metadata.resource_version
    control.patch_node("n1", {"metadata": {"annotations": {"x": "1"}}})
    control.patch_node("n2", {"metadata": {"annotations": {"x": "1"}}})
    events = await watch_events(v1, rv, 1, field_selector="metadata.name=n2")
    assert [(t, n) for t, n, _ in events] == [("MODIFIED", "n2")]


async def test_a_watch_resumed_across_dropped_connections_loses_nothing(
    api: KubeApiProcess, v1: kc.CoreV1Api
) -> None:
    """The server aborts every watch connection several times while Nodes change; the client resumes
    from the last resourceVersion it saw (the reflector's loop) and sees each change exactly once."""
    control = AsyncKubeApiControl(api.url)
    rv = (await v1.list_node()).metadata.resource_version
    expected: list[tuple[str, str]] = []
    errors: list[str] = []
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def follow() -> None:
        resume = rv
        while not done.is_set() or len(seen) < len(expected):
            w = kw.Watch()
            try:
                async for event in w.stream(
                    v1.list_node, resource_version=resume, allow_watch_bookmarks=True, timeout_seconds=30
                ):
                    if event["type"] != "BOOKMARK":
                        seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
                    if done.is_set() and len(seen) >= len(expected):
                        break
            except aiohttp.ClientError as exc:  # how kubernetes.aio surfaces an aborted watch
                errors.append(type(exc).__name__)
            finally:
                resume = w.resource_version or resume
                await w.close()

    follower = asyncio.create_task(follow())
    async with control:
        for i in range(12):
            name = f"n{i % 4}"
            if i < 4:
                await control.create_node(node_body(name))
                expected.append(("ADDED", name))
            elif i < 10:
                await control.patch_node(name, {"metadata": {"annotations": {"step": str(i)}}}, status=True)
                expected.append(("MODIFIED", name))
            else:
                await control.delete_node(name)
                expected.append(("DELETED", name))
            if i % 3 == 2:
                # once the follower has seen every change so far, its watch is open: drop it
                await async_wait_until(
                    lambda: asyncio.sleep(0, len(seen) == len(expected)), timeout=30, what=f"{expected}"
                )
                assert await control.drop_watches() == 1
        done.set()
        await asyncio.wait_for(follower, 20)
    assert seen == expected
    assert errors and set(errors) <= {"ClientPayloadError", "ServerDisconnectedError"}, errors


async def test_a_cleanly_ended_watch_is_resumed_by_the_client_itself(
    api: KubeApiProcess, v1: kc.CoreV1Api
) -> None:
    """Without timeout_seconds, kubernetes.aio re-watches on its own from the last version it saw when
    the server ends a stream cleanly (``drop-watches?clean=1``, like an expired server-side timeout)."""
    control = AsyncKubeApiControl(api.url)
    rv = (await v1.list_node()).metadata.resource_version
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async with kw.Watch() as w:
            async for event in w.stream(v1.list_node, resource_version=rv):
                seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
                if len(seen) == 3:
                    return

    follower = asyncio.create_task(follow())

    async def seen_count(n: int) -> None:
        # the follower's watch delivered the n-th event, so it is open (until it is dropped)
        await async_wait_until(lambda: asyncio.sleep(0, len(seen) >= n), timeout=30, what=f"{n} events")

    async with control:
        await control.create_node(node_body("a"))
        await seen_count(1)
        assert await control.drop_watches(clean=True) == 1
        await control.create_node(node_body("b"))
        await seen_count(2)
        assert await control.drop_watches(clean=True) == 1
        await control.delete_node("a")
        await asyncio.wait_for(follower, 10)
        watches = [r["query"] for r in await control.requests() if "watch=" in r["query"]]
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert len(watches) == 3 and f"resourceVersion={rv}&" in watches[0]
    assert watches[1] != watches[0]  # resumed from the last event's version, not the first one


async def test_a_compacted_version_is_410_expired(own_etcd: EtcdServer, prefix: str) -> None:
    with running(own_etcd.endpoint, prefix) as api:
        control = api.control
        client = kc.ApiClient(kc.Configuration(host=api.url))
        v1 = kc.CoreV1Api(client)
        try:
            control.create_node(node_body("n1"))
            old_rv = (await v1.list_node()).metadata.resource_version
            control.patch_node("n1", {"metadata": {"annotations": {"a": "b"}}})
            compacted = control.compact()
            assert compacted > int(old_rv)

            # with timeout_seconds: the in-stream ERROR event is raised at once as ApiException(410)
            control.clear_requests()
            with pytest.raises(ApiException) as err:
                await watch_events(v1, old_rv, 1)
            assert err.value.status == 410
            assert err.value.reason.startswith("Expired: too old resource version: " + old_rv)
            assert len([r for r in control.requests() if "watch=" in r["query"]]) == 1

            # without timeout_seconds the client retries once with the same version, then raises
            control.clear_requests()
            with pytest.raises(ApiException) as err:
                async with kw.Watch() as w:
                    async for _ in w.stream(v1.list_node, resource_version=old_rv):
                        pass
            assert err.value.status == 410
            watches = [r for r in control.requests() if "watch=" in r["query"]]
            assert len(watches) == 2 and all(f"resourceVersion={old_rv}" in r["query"] for r in watches)

            # the raw stream: HTTP 200 and one ERROR event carrying the Status, then the end
            url = f"{api.url}/api/v1/nodes?watch=true&resourceVersion={old_rv}"
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                assert resp.status == 200
                lines = (await resp.read()).splitlines()
            error = json.loads(lines[0])
            assert len(lines) == 1 and error["type"] == "ERROR"
            assert error["object"] | {"message": ""} == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "",
                "reason": "Expired",
                "code": 410,
            }

            # relist and watch again works; so does a bookmark's version taken after the compaction
            fresh = await v1.list_node()
            control.patch_node("n1", {"metadata": {"annotations": {"a": "c"}}})
            assert [e[:2] for e in await watch_events(v1, fresh.metadata.resource_version, 1)] == [
                ("MODIFIED", "n1")
            ]

            # an idle watch open across a compaction: its bookmarks move its version past the compaction,
            # so after a dropped connection it resumes from the bookmark without a 410
            listed = (await v1.list_node()).metadata.resource_version
            w = kw.Watch()
            stream = w.stream(
                v1.list_node, resource_version=listed, allow_watch_bookmarks=True, timeout_seconds=10
            )
            compacted = 0
            async for event in stream:
                assert event["type"] == "BOOKMARK"
                if not compacted:
                    compacted = control.compact()
                elif int(w.resource_version) > compacted:
                    break
            await w.close()
            bookmark = w.resource_version
            control.patch_node("n1", {"metadata": {"annotations": {"a": "after"}}})
            assert [e[:2] for e in await watch_events(v1, bookmark, 1)] == [("MODIFIED", "n1")]
            with pytest.raises(ApiException):
                await watch_events(v1, listed, 1)
        finally:
            await client.close()


# ---- patches and the status subresource ---------------------------------------------------------------


async def test_status_patch_merges_annotations_and_conditions_and_keeps_the_spec(
    api: KubeApiProcess, v1: kc.CoreV1Api
) -> None:
    api.control.create_node(node_body("n1", pod_cidr="10.244.1.0/24"))
    patch = {
        "metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": "10.0.0.1"}},
        "spec": {"podCIDR": "10.99.0.0/24"},
        "status": {
            "conditions": [
                {
                    "type": "NetworkUnavailable",
                    "status": "False",
                    "reason": "FlannelIsUp",
                    "message": "Flannel is running on this node",
                }
            ]
        },
    }
    node = await v1.patch_node_status("n1", patch, _content_type=SMP)
    assert node.spec.pod_cidr == "10.244.1.0/24"  # /status keeps the spec
    assert node.metadata.annotations["flannel.alpha.coreos.com/public-ip"] == "10.0.0.1"
    assert node.metadata.annotations["node.alpha.kubernetes.io/ttl"] == "0"
    assert [(c.type, c.status) for c in node.status.conditions] == [
        ("Ready", "True"),
        ("NetworkUnavailable", "False"),
    ]

    # merged by type: the same condition again replaces its fields, the list keeps both
    again = await v1.patch_node_status(
        "n1",
        {"status": {"conditions": [{"type": "NetworkUnavailable", "status": "True", "reason": "Down"}]}},
        _content_type=SMP,
    )
    assert [(c.type, c.status, c.reason) for c in again.status.conditions] == [
        ("Ready", "True", "KubeletReady"),
        ("NetworkUnavailable", "True", "Down"),
    ]
    assert again.status.conditions[1].message == "Flannel is running on this node"
    assert int(again.metadata.resource_version) > int(node.metadata.resource_version)

    # an object patch without _content_type: kubernetes.aio sends it as a strategic merge patch
    api.control.clear_requests()
    same = await v1.patch_node_status(
        "n1", {"metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": "10.0.0.1"}}}
    )
    assert api.control.requests()[-1]["content_type"] == SMP
    assert same.metadata.resource_version == again.metadata.resource_version  # a no-op writes nothing


async def test_patches_on_the_main_resource_keep_the_status(api: KubeApiProcess, v1: kc.CoreV1Api) -> None:
    control = api.control
    control.create_node(node_body("n1", pod_cidr="10.244.1.0/24", annotations={"drop": "me"}))
    node = await v1.patch_node(
        "n1",
        {
            "spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]},
            "metadata": {"annotations": {"drop": None}},
            "status": {"conditions": []},
        },
        _content_type=MERGE_PATCH,
    )
    assert node.spec.pod_cidrs == ["10.244.9.0/24"]
    assert "drop" not in node.metadata.annotations
    assert [c.type for c in node.status.conditions] == ["Ready"]

    node = await v1.patch_node(
        "n1",
        [
            {"op": "add", "path": "/metadata/labels/zone", "value": "a"},
            {"op": "replace", "path": "/spec/podCIDR", "value": "10.244.7.0/24"},
            {"op": "remove", "path": "/metadata/annotations/node.alpha.kubernetes.io~1ttl"},
        ],
        _content_type=JSON_PATCH,
    )
    assert node.metadata.labels["zone"] == "a" and node.spec.pod_cidr == "10.244.7.0/24"
    assert "node.alpha.kubernetes.io/ttl" not in node.metadata.annotations

    with pytest.raises(ApiException) as err:
        await v1.patch_node(
            "n1", [{"op": "remove", "path": "/metadata/annotations/missing"}], _content_type=JSON_PATCH
        )
    assert err.value.status == 422
    with pytest.raises(KubeApiError) as bad:
        control.patch_node("n1", {"op": "add"}, content_type=JSON_PATCH)  # an object is no JSON patch
    assert bad.value.code == 400 and bad.value.status["kind"] == "Status"
    with pytest.raises(KubeApiError) as bad:
        control.patch_node("n1", {}, content_type="application/apply-patch+yaml")
    assert bad.value.code == 415


async def test_concurrent_patches_never_lose_an_update(etcd: EtcdServer, prefix: str) -> None:
    async with KubeApiServer(etcd.endpoint, prefix) as server, AsyncKubeApiControl(server.url) as control:
        await control.create_node(node_body("n1"))
        await asyncio.gather(
            *(
                control.patch_node("n1", {"metadata": {"annotations": {f"k{i}": str(i)}}}, status=bool(i % 2))
                for i in range(20)
            )
        )
        node = await control.get_node("n1")
        assert {f"k{i}" for i in range(20)} <= set(node["metadata"]["annotations"])
        # every returned version was a real write: the final one is the key's mod_revision
        kv, _ = await server.etcd.get(server.node_prefix + "n1")
        assert kv is not None and node["metadata"]["resourceVersion"] == str(kv.mod_revision)


# ---- errors -----------------------------------------------------------------------------------------


async def test_forbidden_not_found_and_conflicts_are_status_objects(
    api: KubeApiProcess, v1: kc.CoreV1Api
) -> None:
    control = api.control
    created = await v1.create_node(kc.V1Node.from_dict(node_body("n1")))
    assert created.metadata.uid and created.metadata.creation_timestamp

    control.deny("patch", "nodes/status")
    with pytest.raises(ApiException) as err:
        await v1.patch_node_status("n1", {"metadata": {"annotations": {"a": "b"}}}, _content_type=SMP)
    assert err.value.status == 403
    status = json.loads(err.value.body)
    assert status["reason"] == "Forbidden" and status["message"] == (
        'nodes "n1" is forbidden: User "system:serviceaccount:kube-flannel:flannel" cannot patch resource '
        '"nodes/status" in API group "" at the cluster scope'
    )
    await v1.patch_node(
        "n1", {"metadata": {"annotations": {"a": "b"}}}, _content_type=SMP
    )  # other verbs pass
    control.allow_all()
    await v1.patch_node_status("n1", {"metadata": {"annotations": {"a": "c"}}}, _content_type=SMP)
    patches = [r for r in control.requests() if r["method"] == "PATCH"]
    assert [r["path"] for r in patches] == [
        "/api/v1/nodes/n1/status",
        "/api/v1/nodes/n1",
        "/api/v1/nodes/n1/status",
    ]
    assert json.loads(patches[0]["body"]) == {"metadata": {"annotations": {"a": "b"}}}

    for call in (
        v1.read_node("ghost"),
        v1.patch_node_status("ghost", {"metadata": {}}, _content_type=SMP),
        v1.delete_node("ghost"),
    ):
        with pytest.raises(ApiException) as err:
            await call
        assert err.value.status == 404
        assert json.loads(err.value.body)["message"] == 'nodes "ghost" not found'

    with pytest.raises(ApiException) as err:
        await v1.create_node(kc.V1Node.from_dict(node_body("n1")))
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"

    stale = control.get_node("n1")
    assert stale["metadata"]["resourceVersion"] != created.metadata.resource_version  # patched since
    control.patch_node("n1", {"metadata": {"annotations": {"a": "d"}}})
    stale["metadata"]["labels"]["x"] = "y"
    with pytest.raises(KubeApiError) as conflict:  # PUT with an old resourceVersion
        control.replace_node(stale)
    assert conflict.value.code == 409 and conflict.value.reason == "Conflict"
    current = control.get_node("n1")
    current["metadata"]["labels"]["x"] = "y"
    current["status"]["conditions"] = []
    replaced = control.replace_node(current)
    assert replaced["metadata"]["labels"]["x"] == "y" and replaced["status"]["conditions"]  # status kept

    with pytest.raises(KubeApiError) as stale_patch:  # a resourceVersion in a patch is a precondition
        control.patch_node("n1", {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}})
    assert stale_patch.value.code == 409


def test_the_command_line_prints_where_it_listens_and_stops_on_sigterm(etcd: EtcdServer, prefix: str) -> None:
    server = KubeApiProcess(etcd.endpoint, prefix, listen="127.0.0.1:0").start()
    try:
        assert server.port > 0
        with urllib.request.urlopen(server.url + "/healthz", timeout=5) as resp:
            assert resp.read() == b"ok"
        proc = server.proc
        assert proc is not None
    finally:
        server.stop()
    assert proc.returncode == 0


# ---- the patch functions ------------------------------------------------------------------------------


def test_patch_functions() -> None:
    node = make_node("n1", addresses="10.0.0.5")
    assert node["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.5"},
        {"type": "Hostname", "address": "n1"},
    ]
    patched = strategic_merge_patch(
        node,
        {
            "metadata": {"finalizers": ["a"], "$setElementOrder/conditions": [{"type": "Ready"}]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.6"}],
                "conditions": [{"type": "Ready", "$patch": "delete"}],
            },
        },
    )
    assert patched["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.0.0.6"}
    assert patched["status"]["conditions"] == [] and patched["metadata"]["finalizers"] == ["a"]
    assert "$setElementOrder/conditions" not in patched["metadata"]
    assert node["status"]["addresses"][0]["address"] == "10.0.0.5"  # the input is not changed
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {
        "a": {"c": 2},
        "l": [2],
    }
    assert json_patch(
        {"l": [1, 2]},
        [
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "move", "from": "/l/0", "path": "/m"},
            {"op": "test", "path": "/m", "value": 1},
        ],
    ) == {"l": [2, 3], "m": 1}


def test_sync_control_raises_status_errors(api: KubeApiProcess) -> None:
    control = KubeApiControl(api.url)
    with pytest.raises(KubeApiError) as err:
        control.get_node("nope")
    assert err.value.code == 404 and err.value.status["kind"] == "Status"
