"""A small Kubernetes API server for Node objects, backed by a real etcd, for tests.

It behaves like kube-apiserver where the official client can tell: discovery; list with a
resourceVersion (the etcd revision); watch from a resourceVersion with BOOKMARKs, ``timeoutSeconds``
and an ERROR 410 Expired event for a compacted version; get, create, delete; merge, strategic-merge
(lists merged by their patch key, e.g. ``status.conditions`` by ``type``) and JSON patches; the
status subresource as the node strategy treats it (keeps ``.spec``, applies metadata and ``.status``);
Status objects for 404, 409, 403, 422.

Run it as its own process (tests in other network namespaces reach it over HTTP)::

    python -m tests.support.fake_apiserver --etcd http://127.0.0.1:2379 --prefix /registry --listen 127.0.0.1:0

It prints ``listening on HOST:PORT`` once ready. Test controls (only on this fake):
``POST /_test/drop-watches``, ``POST /_test/compact``, ``POST /_test/deny`` with
``{"verb": "patch", "resource": "nodes/status"}``, ``POST /_test/allow-all``, ``GET /_test/requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from lease_service.etcd import EtcdClient, EtcdSettings, WatchCompacted

#: strategic-merge keys of the Node lists a client may patch
MERGE_KEYS = {("status", "conditions"): "type", ("status", "addresses"): "type"}
USER = "system:serviceaccount:kube-flannel:flannel"


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return web.json_response(body, status=code)


def make_node(name: str, pod_cidr: str | None = None, pod_cidrs: list[str] | None = None,
              annotations: dict[str, str] | None = None, address: str = "192.168.0.1") -> dict[str, Any]:
    """A Node as kubelet registers it (it always carries annotations)."""
    cidrs = pod_cidrs if pod_cidrs is not None else ([pod_cidr] if pod_cidr else [])
    spec: dict[str, Any] = {}
    if cidrs:
        spec = {"podCIDR": cidrs[0], "podCIDRs": cidrs}
    return {
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                                     **(annotations or {})}},
        "spec": spec,
        "status": {"addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Merge patch, except lists with a patch merge key are merged element by element on that key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # directives ($patch, $retainKeys, ...) are not needed by our clients
        where = (*path, key)
        if value is None:
            result.pop(key, None)
        elif where in MERGE_KEYS and isinstance(value, list):
            merge_key = MERGE_KEYS[where]
            merged = [copy.deepcopy(item) for item in result.get(key) or []]
            for item in value:
                found = next((i for i, old in enumerate(merged) if old.get(merge_key) == item.get(merge_key)), None)
                if found is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[found] = strategic_merge(merged[found], item, where)
            result[key] = merged
        else:
            result[key] = strategic_merge(result.get(key), value, where)
    return result


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, replace, remove, test."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] == "add" and isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        elif op["op"] == "replace" and isinstance(parent, list):
            parent[int(last)] = op["value"]
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and last not in parent:
                raise KeyError(op["path"])
            parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test":
            if (parent[int(last)] if isinstance(parent, list) else parent.get(last)) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unsupported op {op['op']!r}")
    return doc


class FakeApiServer:
    """The server; ``app`` is an aiohttp application."""

    def __init__(self, etcd: EtcdClient, prefix: str) -> None:
        self.etcd = etcd
        self.prefix = prefix.rstrip("/") + "/minions/"
        self.denied: set[tuple[str, str]] = set()
        self.requests: list[dict[str, str]] = []
        self.watches: set[asyncio.Task[Any]] = set()
        self.tombstones: dict[tuple[str, int], dict[str, Any]] = {}  # deleted objects, by (key, revision)
        self.app = web.Application(middlewares=[self._record])
        r = self.app.router
        r.add_get("/version", self.version)
        r.add_get("/api", self.api)
        r.add_get("/api/v1", self.api_v1)
        r.add_get("/apis", self.apis)
        r.add_get("/api/v1/nodes", self.list_or_watch)
        r.add_post("/api/v1/nodes", self.create)
        r.add_get("/api/v1/nodes/{name}", self.get)
        r.add_get("/api/v1/nodes/{name}/status", self.get)
        r.add_delete("/api/v1/nodes/{name}", self.delete)
        r.add_patch("/api/v1/nodes/{name}", self.patch)
        r.add_patch("/api/v1/nodes/{name}/status", self.patch)
        r.add_post("/_test/drop-watches", self.drop_watches)
        r.add_post("/_test/compact", self.compact)
        r.add_post("/_test/deny", self.deny)
        r.add_post("/_test/allow-all", self.allow_all)
        r.add_get("/_test/requests", self.request_log)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_test"):
            self.requests.append({"method": request.method, "path": request.path, "query": request.query_string,
                                  "content_type": request.headers.get("Content-Type", "")})
        return await handler(request)  # type: ignore[no-any-return]

    def _forbidden(self, verb: str, resource: str, name: str = "") -> web.Response | None:
        if (verb, resource) not in self.denied:
            return None
        res, _, sub = resource.partition("/")
        what = f'{res} "{name}"' if name else res
        return status(403, "Forbidden", f'{what} is forbidden: User "{USER}" cannot {verb} resource "{res}"'
                      + (f' subresource "{sub}"' if sub else "") + ' in API group "" at the cluster scope')

    # ---- discovery --------------------------------------------------------------------------
    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "platform": "linux/amd64"})

    async def api(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "fake"}]})

    async def api_v1(self, request: web.Request) -> web.Response:
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node", "verbs": verbs},
            {"name": "nodes/status", "singularName": "", "namespaced": False, "kind": "Node",
             "verbs": ["get", "patch", "update"]}]})

    async def apis(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    # ---- storage ----------------------------------------------------------------------------
    def _decode(self, value: bytes, revision: int) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(value)
        obj["metadata"]["resourceVersion"] = str(revision)
        return obj

    async def _read(self, name: str) -> tuple[dict[str, Any] | None, int]:
        kv, _ = await self.etcd.get(self.prefix + name)
        if kv is None:
            return None, 0
        return self._decode(kv.value, kv.mod_revision), kv.mod_revision

    # ---- list and watch ---------------------------------------------------------------------
    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") in ("1", "true", "True"):
            if (denied := self._forbidden("watch", "nodes")) is not None:
                return denied
            return await self._watch(request)
        if (denied := self._forbidden("list", "nodes")) is not None:
            return denied
        kvs, revision = await self.etcd.get_prefix(self.prefix)
        items = [self._decode(kv.value, kv.mod_revision) for kv in kvs]
        return web.json_response({"kind": "NodeList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(revision)}, "items": items})

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        rv_text = request.query.get("resourceVersion", "")
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true", "True")
        timeout = float(request.query.get("timeoutSeconds", "0") or 0) or 1800.0
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self.watches.add(task)

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            if rv_text in ("", "0"):
                kvs, revision = await self.etcd.get_prefix(self.prefix)
                for kv in kvs:
                    await send("ADDED", self._decode(kv.value, kv.mod_revision))
            else:
                revision = int(rv_text)
            deadline = time.monotonic() + timeout
            stream = self.etcd.watch_prefix(self.prefix, revision + 1)
            pending: asyncio.Task[Any] | None = None
            try:
                while time.monotonic() < deadline:
                    if pending is None:
                        pending = asyncio.ensure_future(anext(stream))
                    done, _ = await asyncio.wait({pending}, timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
                    if not done:
                        if bookmarks:
                            await send("BOOKMARK", {"kind": "Node", "apiVersion": "v1",
                                                    "metadata": {"resourceVersion": str(revision)}})
                        continue
                    batch, pending = pending.result(), None
                    for event in batch.events:
                        key = event.kv.key
                        if event.type == "put":
                            kind = "ADDED" if event.kv.version == 1 else "MODIFIED"
                            await send(kind, self._decode(event.kv.value, event.kv.mod_revision))
                        else:
                            old = self.tombstones.get((key, event.kv.mod_revision))
                            obj = copy.deepcopy(old) if old else {"kind": "Node", "apiVersion": "v1",
                                                                  "metadata": {"name": key[len(self.prefix):]}}
                            obj["metadata"]["resourceVersion"] = str(event.kv.mod_revision)
                            await send("DELETED", obj)
                    revision = max(revision, batch.revision)
            finally:
                if pending is not None:
                    pending.cancel()
                await stream.aclose()  # type: ignore[attr-defined]
        except WatchCompacted:
            await send("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                 "message": f"too old resource version: {rv_text}", "reason": "Expired", "code": 410})
        except (asyncio.CancelledError, ConnectionResetError):
            # dropped on purpose (/_test/drop-watches) or by the client: end abruptly, as a broken connection
            if request.transport is not None:
                request.transport.abort()
            raise
        finally:
            self.watches.discard(task)
        return response

    # ---- objects ----------------------------------------------------------------------------
    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if (denied := self._forbidden("get", "nodes", name)) is not None:
            return denied
        obj, _ = await self._read(name)
        if obj is None:
            return status(404, "NotFound", f'nodes "{name}" not found')
        return web.json_response(obj)

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self._forbidden("create", "nodes")) is not None:
            return denied
        obj = await request.json()
        name = obj.get("metadata", {}).get("name")
        if not name:
            return status(422, "Invalid", "metadata.name: Required value")
        obj.setdefault("kind", "Node")
        obj.setdefault("apiVersion", "v1")
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if not await self.etcd.create(self.prefix + name, json.dumps(obj).encode()):
            return status(409, "AlreadyExists", f'nodes "{name}" already exists')
        created, _ = await self._read(name)
        return web.json_response(created, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if (denied := self._forbidden("delete", "nodes", name)) is not None:
            return denied
        obj, _ = await self._read(name)
        if obj is None:
            return status(404, "NotFound", f'nodes "{name}" not found')
        revision = await self.etcd.delete(self.prefix + name)
        self.tombstones[(self.prefix + name, revision)] = obj
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                  "details": {"name": name, "kind": "nodes"}})

    async def patch(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        subresource = request.path.endswith("/status")
        resource = "nodes/status" if subresource else "nodes"
        if (denied := self._forbidden("patch", resource, name)) is not None:
            return denied
        kind = request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            patch = json.loads(await request.read())
        except ValueError as exc:
            return status(400, "BadRequest", f"the body of the request was in an unknown format: {exc}")
        for _ in range(20):  # optimistic concurrency on etcd: never lose a concurrent update
            old, revision = await self._read(name)
            if old is None:
                return status(404, "NotFound", f'nodes "{name}" not found')
            try:
                if kind == "application/merge-patch+json":
                    new = merge_patch(old, patch)
                elif kind == "application/strategic-merge-patch+json":
                    new = strategic_merge(old, patch)
                elif kind == "application/json-patch+json":
                    new = json_patch(old, patch)
                else:
                    return status(415, "UnsupportedMediaType", f"the content type {kind!r} is not supported")
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                return status(422, "Invalid", f"the patch could not be applied: {exc}")
            if subresource:  # the node status strategy: metadata and status from the patch, spec kept
                new = {**new, "spec": old.get("spec", {})}
            else:
                new = {**new, "status": old.get("status", {})}
            new["metadata"]["name"] = name
            new["metadata"].pop("resourceVersion", None)
            if await self.etcd.replace(self.prefix + name, json.dumps(new).encode(), revision):
                patched, _ = await self._read(name)
                return web.json_response(patched)
        return status(409, "Conflict", f'Operation cannot be fulfilled on nodes "{name}": too many conflicts')

    # ---- test controls ----------------------------------------------------------------------
    async def drop_watches(self, request: web.Request) -> web.Response:
        dropped = len(self.watches)
        for task in list(self.watches):
            task.cancel()
        return web.json_response({"dropped": dropped})

    async def compact(self, request: web.Request) -> web.Response:
        marker = self.prefix.rstrip("/") + "-compaction-marker"
        revision = await self.etcd.put(marker, b"x")
        await self.etcd.compact(revision)
        return web.json_response({"revision": revision})

    async def deny(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.denied.add((body["verb"], body["resource"]))
        return web.json_response({"denied": sorted(map(list, self.denied))})

    async def allow_all(self, request: web.Request) -> web.Response:
        self.denied.clear()
        return web.json_response({"denied": []})

    async def request_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)


async def serve(etcd_endpoint: str, prefix: str, host: str, port: int, ready: Any = None) -> None:
    client = EtcdClient(EtcdSettings(endpoints=(etcd_endpoint,)))
    server = FakeApiServer(client, prefix)
    runner = web.AppRunner(server.app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on {host}:{bound}", flush=True)
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await client.close()


class ApiServerProcess:
    """The fake API server as a child process (optionally inside a network namespace)."""

    def __init__(self, etcd_endpoint: str, prefix: str, host: str = "127.0.0.1", netns: str | None = None,
                 log_path: Path | None = None) -> None:
        self.etcd_endpoint, self.prefix, self.host, self.netns = etcd_endpoint, prefix, host, netns
        self.log_path = log_path
        self.proc: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20) -> ApiServerProcess:
        import subprocess

        root = Path(__file__).resolve().parents[2]
        argv = [sys.executable, "-m", "tests.support.fake_apiserver", "--etcd", self.etcd_endpoint,
                "--prefix", self.prefix, "--listen", f"{self.host}:0"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, cwd=root, text=True,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # blocks until "listening on" or exit
        if not line.startswith("listening on ") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"fake API server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    # -- HTTP helpers for tests (urllib: no event loop needed) --------------------------------
    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type})

        def go() -> Any:
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                return json.loads(exc.read() or b"null")

        if self.netns is None:
            return go()
        from tests.support.cluster import in_netns  # the server listens inside its namespace

        return in_netns(self.netns, go)

    def create_node(self, node: dict[str, Any]) -> Any:
        return self.call("POST", "/api/v1/nodes", node)

    def patch_node(self, name: str, patch: Any, *, status: bool = False,
                   content_type: str = "application/strategic-merge-patch+json") -> Any:
        return self.call("PATCH", f"/api/v1/nodes/{name}" + ("/status" if status else ""), patch, content_type)

    def delete_node(self, name: str) -> Any:
        return self.call("DELETE", f"/api/v1/nodes/{name}")

    def get_node(self, name: str) -> Any:
        return self.call("GET", f"/api/v1/nodes/{name}")

    def requests(self) -> list[dict[str, str]]:
        return self.call("GET", "/_test/requests")  # type: ignore[no-any-return]

    def drop_watches(self) -> int:
        return int(self.call("POST", "/_test/drop-watches")["dropped"])

    def compact(self) -> int:
        return int(self.call("POST", "/_test/compact")["revision"])

    def deny(self, verb: str, resource: str) -> None:
        self.call("POST", "/_test/deny", {"verb": verb, "resource": resource})

    def allow_all(self) -> None:
        self.call("POST", "/_test/allow-all")


@contextmanager
def running(etcd_endpoint: str, prefix: str, **kwargs: Any) -> Iterator[ApiServerProcess]:
    server = ApiServerProcess(etcd_endpoint, prefix, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--etcd", required=True, help="etcd client URL")
    parser.add_argument("--prefix", default="/registry", help="etcd key prefix (nodes live at PREFIX/minions/)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(args.etcd, args.prefix, host, int(port)))


if __name__ == "__main__":
    main()
