"""A small Kubernetes API server for Node objects, backed by a real etcd, for tests.

There is no kube-apiserver binary here; this one keeps the semantics the official client can see:

- discovery: ``/version``, ``/api``, ``/api/v1`` (nodes, nodes/status), ``/apis``, ``/healthz``;
- Nodes stored as JSON at ``<prefix>/minions/<name>``; ``metadata.resourceVersion`` is the etcd
  mod_revision, a NodeList's is the revision of the etcd read;
- list (``labelSelector``, ``fieldSelector=metadata.name=X``, pages with ``limit``/``continue`` at the
  first page's revision; an unknown token is 410 Expired), get, create (409 AlreadyExists), update
  (PUT; a ``resourceVersion`` precondition gives 409 Conflict), delete, patch (merge, strategic merge
  with ``status.conditions``/``status.addresses`` merged by ``type``, JSON patch), all with optimistic
  concurrency on etcd; a no-op update writes nothing and keeps the resourceVersion;
- the status subresource as the node strategy treats it: ``/status`` keeps ``.spec``, applies metadata
  and ``.status``; the main resource keeps ``.status``;
- watch from a resourceVersion (an etcd watch from RV+1; RV "0"/absent: synthetic ADDED for what exists,
  then from now), DELETED with the last state and the deletion's revision, BOOKMARKs about every second
  with ``allowWatchBookmarks`` (see below), the stream closed after ``timeoutSeconds``, and a compacted
  RV answered by one in-stream ``ERROR`` event (Status 410 Expired) as the watch cache does;
- errors as ``Status`` objects: 400, 403 (RBAC's wording), 404, 409, 415, 422.

Bookmarks carry a revision up to which every Node event has been sent, also when the cluster is idle:
while watches with bookmarks are open the server writes ``<prefix>/minions.bookmark`` (outside the Node
keys) about once a second and each watch turns that write, which etcd delivers in order after every
earlier event, into a BOOKMARK (a real cluster's revisions advance the same way through other objects).

Run it as its own process::

    python -m flannel_testkit.kubeapi --etcd-endpoint http://127.0.0.1:2379 --prefix /registry-x \\
        --listen 127.0.0.1:0

It prints ``listening on HOST:PORT`` once it accepts connections and stops on SIGTERM/SIGINT.

Test controls (only on this fake; never recorded in the request log):

- ``POST /_test/drop-watches``: abort every open watch connection (no clean end of the chunked body);
  answers ``{"dropped": N}``; ``?clean=1`` ends the streams cleanly instead, as ``timeoutSeconds`` does;
- ``POST /_test/compact``: write the marker key twice and compact etcd there, so that every
  resourceVersion handed out before is too old; answers ``{"revision": R}``;
- ``POST /_test/deny`` ``{"verb": "patch", "resource": "nodes/status"}`` (``"*"`` for any verb; ``"code"``
  401 or 400 answers that status instead of 403) and ``POST /_test/allow-all``;
- ``POST /_test/inject-frame`` with any bytes: written as they are (plus a newline) into every open watch
  stream, e.g. a frame that is not JSON; answers ``{"injected": N}``;
- ``GET /_test/requests``: ``[{"method", "path", "query", "content_type", "body"}, ...]`` of every API
  request so far; ``POST /_test/clear-requests`` empties it.

How ``kubernetes.aio`` surfaces things (kubernetes 37.0.2): an ERROR event becomes
``ApiException(status=410, reason="Expired: too old resource version: ...")`` raised by the watch
iterator (without ``timeout_seconds`` it first retries once with the same resourceVersion); a dropped
watch raises ``aiohttp.ClientPayloadError`` from the iterator; ``patch_node_status(name, dict)`` without
``_content_type`` sends ``application/json-patch+json`` with an object body, which this server (like the
real one) refuses with 400.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import ClientSession, ClientTimeout, web

from lease_service.etcd import EtcdClient, EtcdSettings, WatchCompacted
from lease_service.etcd.errors import EtcdError

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

DEFAULT_USER = "system:serviceaccount:kube-flannel:flannel"

#: Strategic-merge patch merge keys of a Node's lists (k8s.io/api/core/v1 ``patchMergeKey``);
#: other lists are replaced whole, like the real server does for lists without a merge strategy.
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "volumesAttached"): "name",
    ("spec", "taints"): "key",
    ("metadata", "ownerReferences"): "uid",
}
#: Lists of scalars with ``patchStrategy: merge`` (set union).
MERGE_SCALAR_LISTS = {("metadata", "finalizers")}

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# ---- Node fixtures ------------------------------------------------------------------------------------


def make_node(
    name: str,
    pod_cidr: str | None = None,
    pod_cidrs: Sequence[str] | None = None,
    annotations: dict[str, str] | None = None,
    addresses: Sequence[JSON] | str | None = None,
    labels: dict[str, str] | None = None,
) -> JSON:
    """A Node as kubelet registers it (annotations are always present).

    ``pod_cidrs`` wins over ``pod_cidr``; ``spec.podCIDR`` is the first of them. ``addresses`` is a list
    of ``{"type", "address"}`` or just the InternalIP (default: 10.0.0.1); a Hostname address is added
    when none is given.
    """
    cidrs = list(pod_cidrs) if pod_cidrs is not None else ([pod_cidr] if pod_cidr else [])
    spec: JSON = {}
    if cidrs:
        spec = {"podCIDR": cidrs[0], "podCIDRs": cidrs}
    if addresses is None or isinstance(addresses, str):
        addrs: list[JSON] = [{"type": "InternalIP", "address": addresses or "10.0.0.1"}]
    else:
        addrs = [dict(a) for a in addresses]
    if not any(a.get("type") == "Hostname" for a in addrs):
        addrs.append({"type": "Hostname", "address": name})
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                **(annotations or {}),
            },
        },
        "spec": spec,
        "status": {
            "addresses": addrs,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name + ".boot")),
                "containerRuntimeVersion": "containerd://1.7.20",
                "kernelVersion": "6.1.0-fake",
                "kubeProxyVersion": "v1.31.0",
                "kubeletVersion": "v1.31.0",
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            },
        },
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- patches ----------------------------------------------------------------------------------------


class PatchError(Exception):
    """A patch that cannot be applied (the server answers 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Kubernetes' strategic merge patch for Node objects.

    Like a merge patch, except that lists with a patch merge key (``status.conditions`` by ``type``,
    ``status.addresses`` by ``type``, ...) are merged element by element on that key, and
    ``metadata.finalizers`` by set union. Directives: ``$patch: replace`` / ``$patch: delete`` on maps,
    ``$patch: delete`` on list elements; ``$retainKeys``, ``$setElementOrder/...`` and
    ``$deleteFromPrimitiveList/...`` are ignored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        where = (*path, key)
        if value is None:
            result.pop(key, None)
        elif where in MERGE_KEYS and isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, MERGE_KEYS[where], where)
        elif where in MERGE_SCALAR_LISTS and isinstance(value, list):
            merged = list(result.get(key) or [])
            result[key] = merged + [v for v in value if v not in merged]
        else:
            merged_value = strategic_merge_patch(result.get(key), value, where)
            if merged_value is None:
                result.pop(key, None)
            else:
                result[key] = merged_value
    return result


def _merge_list(old: Any, patch: list[Any], merge_key: str, path: tuple[str, ...]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    merged = [copy.deepcopy(item) for item in old] if isinstance(old, list) else []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {merge_key}")
        found = next(
            (i for i, o in enumerate(merged) if isinstance(o, dict) and o.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get("$patch") == "delete":
            if found is not None:
                del merged[found]
        elif found is None:
            merged.append(
                {k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("$") and v is not None}
            )
        else:
            merged[found] = strategic_merge_patch(merged[found], item, path)
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return doc


def _index(parent: list[Any], part: str, path: str, *, adding: bool = False) -> int:
    if adding and part == "-":
        return len(parent)
    if not part.isdigit():
        raise PatchError(f"invalid array index {part!r} in {path!r}")
    index = int(part)
    if index > len(parent) or (index == len(parent) and not adding):
        raise PatchError(f"array index out of bounds in {path!r}")
    return index


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise TypeError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)

    def remove(path: str) -> Any:
        parts = _pointer(path)
        if not parts:
            raise PatchError("cannot remove the whole document")
        parent = _resolve(doc, parts[:-1], path)
        last = parts[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise PatchError(f"unable to remove nonexistent key: {last} (path: {path})")
            return parent.pop(last)
        if isinstance(parent, list):
            return parent.pop(_index(parent, last, path))
        raise PatchError(f"doc is missing path: {path!r}")

    def add(path: str, value: Any) -> None:
        nonlocal doc
        parts = _pointer(path)
        if not parts:
            doc = copy.deepcopy(value)
            return
        parent = _resolve(doc, parts[:-1], path)
        last = parts[-1]
        if isinstance(parent, dict):
            parent[last] = copy.deepcopy(value)
        elif isinstance(parent, list):
            parent.insert(_index(parent, last, path, adding=True), copy.deepcopy(value))
        else:
            raise PatchError(f"doc is missing path: {path!r}")

    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind, path = op.get("op"), op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} operation does not apply: missing value for path {path!r}")
        if kind == "add":
            add(path, op["value"])
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            remove(path) if _pointer(path) else None
            add(path, op["value"])
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise PatchError(f"{kind} operation needs 'from'")
            value = (
                remove(source) if kind == "move" else copy.deepcopy(_resolve(doc, _pointer(source), source))
            )
            add(path, value)
        elif kind == "test":
            if _resolve(doc, _pointer(path), path) != op["value"]:
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


# ---- selectors ----------------------------------------------------------------------------------------


class BadRequest(Exception):
    pass


def _requirement(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op in ("=", "==", "in"):
        return labels.get(key) in values
    if op in ("!=", "notin"):
        return labels.get(key) not in values
    return (key in labels) == (op == "exists")


def _label_matcher(selector: str) -> Callable[[JSON], bool]:
    """Equality- and set-based label selectors (``a=b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``)."""
    requirements: list[tuple[str, str, frozenset[str]]] = []
    for term in re.findall(r"(?:[^,(]|\([^)]*\))+", selector):
        term = term.strip()
        if not term:
            continue
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term)
        if m:
            requirements.append((m.group(1), m.group(2), frozenset(v.strip() for v in m.group(3).split(","))))
            continue
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", term)
        if m:
            requirements.append((m.group(1), m.group(2), frozenset([m.group(3)])))
            continue
        m = re.fullmatch(r"(!?)([^=!\s]+)", term)
        if m is None:
            raise BadRequest(f"unable to parse requirement: {term!r}")
        requirements.append((m.group(2), "absent" if m.group(1) else "exists", frozenset()))

    def matches(obj: JSON) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(_requirement(labels, key, op, values) for key, op, values in requirements)

    return matches


def _field_matcher(selector: str) -> Callable[[JSON], bool]:
    """Field selectors on ``metadata.name`` (the only Node field the server needs here)."""
    requirements: list[tuple[bool, str]] = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        m = re.fullmatch(r"([^=!]+)(==|=|!=)(.*)", term)
        if m is None:
            raise BadRequest(f"invalid selector: '{selector}'; can't understand '{term}'")
        key, op, value = m.groups()
        if key != "metadata.name":
            raise BadRequest(f"field label not supported: {key}")
        requirements.append((op != "!=", value))

    def matches(obj: JSON) -> bool:
        name = obj.get("metadata", {}).get("name")
        return all((name == value) == equal for equal, value in requirements)

    return matches


def _everything(obj: JSON) -> bool:
    return True


def _matcher(query: Any) -> Callable[[JSON], bool]:
    """The selectors of a list or watch; :func:`_everything` when there are none."""
    if not query.get("labelSelector") and not query.get("fieldSelector"):
        return _everything
    labels = _label_matcher(query.get("labelSelector", ""))
    fields = _field_matcher(query.get("fieldSelector", ""))
    return lambda obj: labels(obj) and fields(obj)


#: How every Node this server writes starts (``_encode``: sorted keys, no resourceVersion).
_STORED_HEAD = b'{"apiVersion":"v1","kind":"Node","metadata":{'


def _with_version(value: bytes, revision: int) -> bytes | None:
    """A stored Node's JSON with ``metadata.resourceVersion`` set, spliced into the bytes; None when the
    value does not start the way this server writes Nodes (then it is decoded and encoded again).

    A watch of thousands of ~10 KB Nodes at hundreds of updates per second would otherwise spend the
    server's one core on decoding and encoding each object, and delay every event behind that
    (a bench measured the server, not the watcher)."""
    if not value.startswith(_STORED_HEAD) or b'"resourceVersion"' in value:
        return None
    head = len(_STORED_HEAD)
    comma = b"" if value[head : head + 1] == b"}" else b","
    return b'%s"resourceVersion":"%d"%s%s' % (value[:head], revision, comma, value[head:])


# ---- the server ---------------------------------------------------------------------------------------


def status_body(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    body: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    """An error answer of the API (turned into a Status response)."""

    def __init__(self, code: int, reason: str, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.name = code, reason, message, name

    def response(self) -> web.Response:
        details = {"name": self.name, "kind": "nodes"} if self.name else None
        return web.json_response(status_body(self.code, self.reason, self.message, details), status=self.code)


def _not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'nodes "{name}" not found', name)


def _conflict(name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on nodes "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        name,
    )


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "t", "yes")


_DROP = object()  # abort the connection
_END = object()  # end the stream cleanly (as after timeoutSeconds)


@dataclass(frozen=True)
class _Frame:
    """Raw bytes to write into a watch stream as one frame (a test control)."""

    data: bytes


@dataclass(eq=False)
class _Watch:
    request: web.Request
    bookmarks: bool
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


class KubeApiServer:
    """The API server in this event loop (``async with KubeApiServer(...) as api: api.url``)."""

    def __init__(
        self,
        etcd_endpoints: str | Sequence[str],
        prefix: str = "/registry",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str = DEFAULT_USER,
        bookmark_interval: float = 1.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        endpoints = (etcd_endpoints,) if isinstance(etcd_endpoints, str) else tuple(etcd_endpoints)
        self.etcd = EtcdClient(EtcdSettings(endpoints=endpoints))
        root = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.node_prefix = f"{root}/minions/"
        self.watch_root = f"{root}/minions"  # the Node keys and the bookmark marker
        self.marker_key = f"{root}/minions.bookmark"
        self.host, self.port = host, port
        self.user = user
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.denied: set[tuple[str, str]] = set()
        self.deny_code = 403
        self.requests: list[JSON] = []
        self.watches: set[_Watch] = set()
        self._continues: dict[str, tuple[int, list[Any]]] = {}  # continue token: (revision, the rest)
        self._runner: web.AppRunner | None = None
        self._marker_task: asyncio.Task[None] | None = None
        self.app = self._make_app()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server: Any = site._server
        assert server is not None and server.sockets
        self.port = int(server.sockets[0].getsockname()[1])
        self._marker_task = asyncio.create_task(self._write_markers())
        return self

    async def stop(self) -> None:
        if self._marker_task is not None:
            self._marker_task.cancel()
            await asyncio.gather(self._marker_task, return_exceptions=True)
            self._marker_task = None
        self._drop_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.etcd.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        for path, handler in (
            ("/version", self.version),
            ("/api", self.api),
            ("/api/v1", self.api_v1),
            ("/apis", self.apis),
        ):
            r.add_get(path, handler)
            r.add_get(path + "/", handler)  # the client asks for "/version/", "/api/", ...
        for probe in ("/healthz", "/readyz", "/livez"):
            r.add_get(probe, self.healthz)
        r.add_get("/api/v1/nodes", self.list_or_watch)
        r.add_post("/api/v1/nodes", self.create)
        for suffix, sub in (("", False), ("/status", True)):
            path = "/api/v1/nodes/{name}" + suffix
            r.add_get(path, self._bind(self.get, sub))
            r.add_put(path, self._bind(self.update, sub))
            r.add_patch(path, self._bind(self.patch, sub))
        r.add_delete("/api/v1/nodes/{name}", self.delete)
        r.add_post("/_test/drop-watches", self.t_drop_watches)
        r.add_post("/_test/compact", self.t_compact)
        r.add_post("/_test/deny", self.t_deny)
        r.add_post("/_test/allow-all", self.t_allow_all)
        r.add_post("/_test/inject-frame", self.t_inject_frame)
        r.add_get("/_test/requests", self.t_requests)
        r.add_post("/_test/clear-requests", self.t_clear_requests)
        return app

    @staticmethod
    def _bind(
        handler: Callable[[web.Request, bool], Awaitable[web.StreamResponse]], sub: bool
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def bound(request: web.Request) -> web.StreamResponse:
            return await handler(request, sub)

        return bound

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_test/"):
            body = ""
            if request.can_read_body and request.method in ("POST", "PUT", "PATCH", "DELETE"):
                body = (await request.read()).decode("utf-8", "replace")
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.query_string,
                    "content_type": request.headers.get("Content-Type", ""),
                    "body": body,
                    "time": time.time(),
                }
            )
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except BadRequest as exc:
            return ApiError(400, "BadRequest", str(exc)).response()
        except EtcdError as exc:
            return ApiError(500, "InternalError", f"Internal error occurred: {exc}").response()
        except web.HTTPException as exc:
            if exc.status in (404, 405):  # unknown path / method: a Status, as the real server answers
                reason = "NotFound" if exc.status == 404 else "MethodNotAllowed"
                message = (
                    "the server could not find the requested resource"
                    if exc.status == 404
                    else ("the server does not allow this method on the requested resource")
                )
                return ApiError(exc.status, reason, message).response()
            raise

    def _authorize(self, verb: str, resource: str, name: str = "") -> None:
        if (verb, resource) not in self.denied and ("*", resource) not in self.denied:
            return
        if self.deny_code == 401:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if self.deny_code == 400:
            raise ApiError(400, "BadRequest", f"the server rejected our request for {verb} {resource}")
        what = f'nodes "{name}"' if name else "nodes"
        raise ApiError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{self.user}" cannot {verb} resource '
            f'"{resource}" in API group "" at the cluster scope',
            name or None,
        )

    # -- discovery ----------------------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-flannel-py-fake",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.22",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def api(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{request.host}"}
                ],
            }
        )

    async def api_v1(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "v1",
                "resources": [
                    {
                        "name": "nodes",
                        "singularName": "node",
                        "namespaced": False,
                        "kind": "Node",
                        "shortNames": ["no"],
                        "verbs": [
                            "create",
                            "delete",
                            "deletecollection",
                            "get",
                            "list",
                            "patch",
                            "update",
                            "watch",
                        ],
                    },
                    {
                        "name": "nodes/status",
                        "singularName": "",
                        "namespaced": False,
                        "kind": "Node",
                        "verbs": ["get", "patch", "update"],
                    },
                ],
            }
        )

    async def apis(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    # -- storage ------------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self.node_prefix + name

    @staticmethod
    def _decode(value: bytes, revision: int) -> JSON:
        try:
            obj = json.loads(value)
            if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
                raise TypeError("not an object with metadata")
        except (TypeError, ValueError) as exc:
            raise ApiError(
                500, "InternalError", f"unable to decode an object at revision {revision}: {exc}"
            ) from exc
        obj["metadata"]["resourceVersion"] = str(revision)
        return obj

    @staticmethod
    def _encode(obj: JSON) -> bytes:
        stored = copy.deepcopy(obj)
        stored["metadata"].pop("resourceVersion", None)
        return json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()

    async def _read(self, name: str) -> tuple[JSON, int]:
        kv, _ = await self.etcd.get(self._key(name))
        if kv is None:
            raise _not_found(name)
        return self._decode(kv.value, kv.mod_revision), kv.mod_revision

    async def _value_at(self, key: str, revision: int) -> Any:
        """The KeyValue of ``key`` as of ``revision``: None if absent; raises WatchCompacted."""
        kvs, _ = await self.etcd.get_prefix_at(key, revision)
        return next((kv for kv in kvs if kv.key == key), None)

    async def _written_revision(self, key: str, value: bytes, after: int) -> int:
        """The revision of our write of ``value`` to ``key``, the first write after revision ``after``."""
        kv, _ = await self.etcd.get(key)
        if kv is not None and kv.value == value:
            return int(kv.mod_revision)
        # Someone wrote again since: find the first write after ``after`` in the history.
        low, high = after + 1, (kv.mod_revision - 1) if kv is not None else after + 1
        found = high
        while low <= high:
            mid = (low + high) // 2
            try:
                old = await self._value_at(key, mid)
            except WatchCompacted:
                return found  # history gone: the best guess
            if old is None or old.mod_revision <= after:
                low = mid + 1
            else:
                found = int(old.mod_revision)
                high = mid - 1
        return found

    # -- list and watch -----------------------------------------------------------------------------

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        matches = _matcher(request.query)
        if _truthy(request.query.get("watch")):
            self._authorize("watch", "nodes")
            return await self._watch(request, matches)
        self._authorize("list", "nodes")
        try:
            limit = int(request.query.get("limit") or 0)
        except ValueError:
            raise BadRequest("invalid limit") from None
        token = request.query.get("continue", "")
        if token:  # the rest of an earlier list, at its revision (kept here as the watch cache keeps it)
            if token not in self._continues:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result.",
                )
            revision, kvs = self._continues.pop(token)
        else:
            kvs, revision = await self.etcd.get_prefix(self.node_prefix)
        meta: JSON = {"resourceVersion": str(revision)}
        if limit > 0 and len(kvs) > limit:
            rest = kvs[limit:]
            kvs = kvs[:limit]
            token = f"{revision}-{uuid.uuid4().hex}"
            self._continues[token] = (revision, rest)
            while len(self._continues) > 32:
                self._continues.pop(next(iter(self._continues)))
            meta["continue"] = token
        if matches is _everything:  # the stored bytes, spliced: no decode and encode of every Node
            parts = [
                _with_version(kv.value, kv.mod_revision)
                or json.dumps(self._decode(kv.value, kv.mod_revision), separators=(",", ":")).encode()
                for kv in kvs
            ]
            head = json.dumps(
                {"kind": "NodeList", "apiVersion": "v1", "metadata": meta}, separators=(",", ":")
            )
            body = b'%s,"items":[%s]}' % (head[:-1].encode(), b",".join(parts))
            return web.Response(body=body, content_type="application/json")
        items = [obj for obj in (self._decode(kv.value, kv.mod_revision) for kv in kvs) if matches(obj)]
        return web.json_response({"kind": "NodeList", "apiVersion": "v1", "metadata": meta, "items": items})

    async def _watch(self, request: web.Request, matches: Callable[[JSON], bool]) -> web.StreamResponse:
        rv_text = request.query.get("resourceVersion", "")
        try:
            start = int(rv_text) if rv_text else 0
            if start < 0:
                raise ValueError(rv_text)
        except ValueError:
            raise BadRequest(f"invalid resource version: {rv_text!r}") from None
        try:
            timeout = float(request.query.get("timeoutSeconds") or 0) or self.default_watch_timeout
        except ValueError:
            raise BadRequest("invalid timeoutSeconds") from None
        watch = _Watch(request, _truthy(request.query.get("allowWatchBookmarks")))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.watches.add(watch)
        pump: asyncio.Task[None] | None = None
        # the last state of each Node on this stream (stored value, revision): for selectors and DELETED
        known: dict[str, tuple[bytes, int]] = {}

        async def send(kind: str, obj: JSON) -> None:
            await response.write(
                json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
            )

        try:
            if start == 0:  # "0"/absent: the current state as ADDED, then from now on (like the real server)
                kvs, start = await self.etcd.get_prefix(self.node_prefix)
                for kv in kvs:
                    obj = self._decode(kv.value, kv.mod_revision)
                    known[kv.key] = (kv.value, kv.mod_revision)
                    if matches(obj):
                        await send("ADDED", obj)

            async def pump_batches() -> None:
                try:
                    async for batch in self.etcd.watch_prefix(self.watch_root, start + 1):
                        watch.queue.put_nowait(batch)
                except Exception as exc:  # noqa: BLE001 - handed to the stream
                    watch.queue.put_nowait(exc)

            pump = asyncio.create_task(pump_batches())
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if request.transport is None or request.transport.is_closing():
                    return response  # the client went away
                try:  # what is queued already without a timer (wait_for makes a task per call)
                    item = watch.queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        item = await asyncio.wait_for(watch.queue.get(), min(remaining, 1.0))
                    except TimeoutError:
                        continue
                if item is _DROP:
                    return response
                if item is _END:
                    break
                if isinstance(item, _Frame):
                    await response.write(item.data + b"\n")
                    continue
                if isinstance(item, WatchCompacted):
                    await send(
                        "ERROR",
                        status_body(
                            410, "Expired", f"too old resource version: {start} ({item.compact_revision})"
                        ),
                    )
                    break
                if isinstance(item, Exception):
                    await send("ERROR", status_body(500, "InternalError", f"watch failed: {item}"))
                    break
                bookmark = item.progress
                for event in item.events:
                    key = event.kv.key
                    if not key.startswith(self.node_prefix):
                        bookmark = bookmark or key == self.marker_key
                        continue
                    stored = known.get(key)
                    if event.type == "put":
                        fast = (
                            _with_version(event.kv.value, event.kv.mod_revision)
                            if matches is _everything
                            else None
                        )
                        if fast is not None:  # no selector: the stored bytes, spliced
                            known[key] = (event.kv.value, event.kv.mod_revision)
                            kind = b"MODIFIED" if stored is not None or event.kv.version > 1 else b"ADDED"
                            await response.write(b'{"type":"%s","object":%s}\n' % (kind, fast))
                            continue
                        try:
                            obj = self._decode(event.kv.value, event.kv.mod_revision)
                            old = self._decode(*stored) if stored is not None else None
                        except ApiError as exc:
                            await send("ERROR", status_body(500, "InternalError", exc.message))
                            raise _StreamDone() from exc
                        known[key] = (event.kv.value, event.kv.mod_revision)
                        was, now = old is not None and matches(old), matches(obj)
                        if now:
                            await send(
                                "MODIFIED" if was or (old is None and event.kv.version > 1) else "ADDED", obj
                            )
                        elif was:
                            await send("DELETED", obj)
                    else:
                        if stored is None:
                            try:
                                prev = await self._value_at(key, event.kv.mod_revision - 1)
                            except WatchCompacted:
                                prev = None
                            stored = (prev.value, prev.mod_revision) if prev is not None else None
                        try:
                            gone: JSON = (
                                self._decode(*stored)
                                if stored is not None
                                else {
                                    "kind": "Node",
                                    "apiVersion": "v1",
                                    "metadata": {"name": key[len(self.node_prefix) :]},
                                }
                            )
                        except ApiError as exc:
                            await send("ERROR", status_body(500, "InternalError", exc.message))
                            raise _StreamDone() from exc
                        known.pop(key, None)
                        gone["metadata"]["resourceVersion"] = str(event.kv.mod_revision)
                        if matches(gone):
                            await send("DELETED", gone)
                if bookmark and watch.bookmarks:
                    await send(
                        "BOOKMARK",
                        {
                            "kind": "Node",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(item.revision)},
                        },
                    )
            await response.write_eof()
        except (_StreamDone, ConnectionError):
            pass
        except (ApiError, EtcdError) as exc:  # the stream is open: report in-stream, as the real server does
            message = exc.message if isinstance(exc, ApiError) else f"Internal error occurred: {exc}"
            try:
                await send("ERROR", status_body(500, "InternalError", message))
                await response.write_eof()
            except ConnectionError:
                pass
        finally:
            self.watches.discard(watch)
            if pump is not None:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
        return response

    async def _write_markers(self) -> None:
        """While watches with bookmarks are open, write the marker key once per interval."""
        while True:
            await asyncio.sleep(self.bookmark_interval)
            if any(w.bookmarks for w in self.watches):
                try:
                    await self.etcd.put(self.marker_key, str(time.time()).encode())
                except Exception as exc:  # noqa: BLE001 - etcd down: no bookmarks until it is back
                    print(f"kubeapi: bookmark marker: {exc}", file=sys.stderr, flush=True)

    def _drop_all(self, clean: bool = False) -> int:
        dropped = 0
        for watch in list(self.watches):
            if clean:
                watch.queue.put_nowait(_END)
            else:
                if watch.request.transport is not None:
                    watch.request.transport.abort()
                watch.queue.put_nowait(_DROP)
            dropped += 1
        return dropped

    # -- objects ------------------------------------------------------------------------------------

    async def get(self, request: web.Request, sub: bool) -> web.Response:
        name = request.match_info["name"]
        self._authorize("get", "nodes/status" if sub else "nodes", name)
        obj, _ = await self._read(name)
        return web.json_response(obj)

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as exc:
            raise BadRequest(f"the body of the request was in an unknown format: {exc}") from None

    async def create(self, request: web.Request) -> web.Response:
        obj = await self._body(request)
        if not isinstance(obj, dict):
            raise BadRequest("the body must be a Node object")
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        self._authorize("create", "nodes", name or "")
        if not isinstance(name, str) or not name:
            raise ApiError(
                422,
                "Invalid",
                'Node "" is invalid: metadata.name: Required value: name or generateName is required',
            )
        self._validate(obj, name)
        obj.setdefault("kind", "Node")
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("spec", {})
        obj.setdefault("status", {})
        assert isinstance(meta, dict)
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        value = self._encode(obj)
        kv, revision = await self.etcd.get(self._key(name))
        if kv is not None or not await self.etcd.create(self._key(name), value):
            raise ApiError(409, "AlreadyExists", f'nodes "{name}" already exists', name)
        obj["metadata"]["resourceVersion"] = str(
            await self._written_revision(self._key(name), value, revision)
        )
        return web.json_response(obj, status=201)

    def _validate(self, obj: Any, name: str) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(422, "Invalid", f'Node "{name}" is invalid: metadata: Required value', name)
        meta = obj["metadata"]
        if not _NAME.match(str(meta.get("name", ""))) or len(str(meta.get("name"))) > 253:
            raise ApiError(
                422,
                "Invalid",
                f'Node "{name}" is invalid: metadata.name: Invalid value: '
                f'"{meta.get("name")}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.'",
                name,
            )
        for part in ("labels", "annotations"):
            values = meta.get(part)
            if values is not None and (
                not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
            ):
                raise ApiError(
                    422,
                    "Invalid",
                    f'Node "{name}" is invalid: metadata.{part}: Invalid value: values must be strings',
                    name,
                )
        for part in ("spec", "status"):
            if obj.get(part) is not None and not isinstance(obj.get(part), dict):
                raise ApiError(422, "Invalid", f'Node "{name}" is invalid: {part}: Invalid value', name)

    async def _update(
        self, name: str, sub: bool, change: Callable[[JSON], JSON], dry_run: bool = False
    ) -> JSON:
        """Read, change, write back if the mod_revision is unchanged; retry on a concurrent write."""
        key = self._key(name)
        for _ in range(100):
            old, revision = await self._read(name)
            new = change(copy.deepcopy(old))
            self._validate(new, name)
            if new["metadata"].get("name") != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"the name of the object ({new['metadata'].get('name')}) does "
                    f"not match the name on the URL ({name})",
                )
            if str(new["metadata"].get("resourceVersion") or old["metadata"]["resourceVersion"]) != str(
                revision
            ):
                raise _conflict(name)
            # the node strategies: /status keeps the spec, the main resource keeps the status
            if sub:
                new["spec"] = old.get("spec", {})
            else:
                new["status"] = old.get("status", {})
            for fixed in ("uid", "creationTimestamp"):
                if fixed in old["metadata"]:
                    new["metadata"][fixed] = old["metadata"][fixed]
                else:
                    new["metadata"].pop(fixed, None)
            new["kind"], new["apiVersion"] = "Node", "v1"
            new["metadata"]["resourceVersion"] = str(revision)
            if new == old or dry_run:
                return new  # a no-op update writes nothing and keeps the resourceVersion
            value = self._encode(new)
            if await self.etcd.replace(key, value, revision):
                new["metadata"]["resourceVersion"] = str(await self._written_revision(key, value, revision))
                return new
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on nodes "{name}": too many concurrent writers',
            name,
        )

    async def update(self, request: web.Request, sub: bool) -> web.Response:
        name = request.match_info["name"]
        self._authorize("update", "nodes/status" if sub else "nodes", name)
        body = await self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise BadRequest("the body must be a Node object with metadata")
        if body["metadata"].get("name") != name:
            raise BadRequest(
                f"the name of the object ({body['metadata'].get('name')}) does not match the name "
                f"on the URL ({name})"
            )

        def replace(old: JSON) -> JSON:
            new = copy.deepcopy(body)
            if not new["metadata"].get("resourceVersion"):  # nodes allow unconditional updates
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return new

        return web.json_response(await self._update(name, sub, replace, "dryRun" in request.query))

    async def patch(self, request: web.Request, sub: bool) -> web.Response:
        name = request.match_info["name"]
        self._authorize("patch", "nodes/status" if sub else "nodes", name)
        kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind not in PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(PATCH_TYPES)}",
            )
        patch = await self._body(request)
        if kind == JSON_PATCH and not isinstance(patch, list):
            raise BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        if kind != JSON_PATCH and not isinstance(patch, dict):
            raise BadRequest(
                f"error decoding patch: json: cannot unmarshal {type(patch).__name__} into Go value "
                "of type map[string]interface {}"
            )

        def apply(old: JSON) -> JSON:
            try:
                if kind == MERGE_PATCH:
                    return merge_patch(old, patch)
                if kind == STRATEGIC_MERGE_PATCH:
                    return strategic_merge_patch(old, patch)
                return json_patch(old, patch)
            except PatchError as exc:
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: {exc}",
                    name,
                ) from exc

        return web.json_response(await self._update(name, sub, apply, "dryRun" in request.query))

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._authorize("delete", "nodes", name)
        options: Any = {}
        if request.can_read_body and (await request.read()).strip():
            options = await self._body(request)
        obj, _ = await self._read(name)
        preconditions = (options or {}).get("preconditions") or {}
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != obj["metadata"]["resourceVersion"]
        ):
            raise _conflict(name)
        if preconditions.get("uid") and preconditions["uid"] != obj["metadata"].get("uid"):
            raise _conflict(name)
        await self.etcd.delete(self._key(name))
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": "nodes", "uid": obj["metadata"].get("uid")},
            }
        )

    # -- test controls ------------------------------------------------------------------------------

    async def t_drop_watches(self, request: web.Request) -> web.Response:
        return web.json_response({"dropped": self._drop_all(clean=_truthy(request.query.get("clean")))})

    async def t_compact(self, request: web.Request) -> web.Response:
        # Two writes first, so that every resourceVersion handed out before is expired: a watch from
        # RV needs RV+1 >= the compaction revision, and RV may be the current revision.
        await self.etcd.put(self.marker_key, b"compact")
        revision = await self.etcd.put(self.marker_key, b"compact")
        await self.etcd.compact(revision)
        return web.json_response({"revision": revision})

    async def t_deny(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.denied.add((str(body["verb"]), str(body["resource"])))
        self.deny_code = int(body.get("code", 403))
        return web.json_response({"denied": sorted(map(list, self.denied))})

    async def t_allow_all(self, request: web.Request) -> web.Response:
        self.denied.clear()
        self.deny_code = 403
        return web.json_response({"denied": []})

    async def t_inject_frame(self, request: web.Request) -> web.Response:
        frame = await request.read()
        for watch in self.watches:
            watch.queue.put_nowait(_Frame(frame))
        return web.json_response({"injected": len(self.watches)})

    async def t_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def t_clear_requests(self, request: web.Request) -> web.Response:
        self.requests.clear()
        return web.json_response({"cleared": True})


class _StreamDone(Exception):
    pass


# ---- the server as a process ----------------------------------------------------------------------------


class KubeApiError(Exception):
    """A non-2xx answer of the API server to a helper call; ``status`` is the Status object."""

    def __init__(self, code: int, status: Any) -> None:
        self.code = code
        self.status = status if isinstance(status, dict) else {"message": str(status)}
        self.reason = self.status.get("reason", "")
        super().__init__(f"{code} {self.reason}: {self.status.get('message', '')}")


def _path(name: str, status: bool) -> str:
    return f"/api/v1/nodes/{name}" + ("/status" if status else "")


class KubeApiControl:
    """Synchronous HTTP helpers (urllib, no event loop): Nodes and the test controls."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """The decoded answer; raises :class:`KubeApiError` for a non-2xx answer."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = raw.decode("utf-8", "replace")
            raise KubeApiError(exc.code, decoded) from None

    def list_nodes(self) -> JSON:
        return self.call("GET", "/api/v1/nodes")

    def get_node(self, name: str) -> JSON:
        return self.call("GET", _path(name, False))

    def create_node(self, node: JSON) -> JSON:
        return self.call("POST", "/api/v1/nodes", node)

    def replace_node(self, node: JSON, *, status: bool = False) -> JSON:
        return self.call("PUT", _path(node["metadata"]["name"], status), node)

    def patch_node(
        self, name: str, patch: Any, *, status: bool = False, content_type: str = STRATEGIC_MERGE_PATCH
    ) -> JSON:
        return self.call("PATCH", _path(name, status), patch, content_type)

    def delete_node(self, name: str) -> JSON:
        return self.call("DELETE", _path(name, False))

    def drop_watches(self, clean: bool = False) -> int:
        return int(self.call("POST", "/_test/drop-watches" + ("?clean=1" if clean else ""))["dropped"])

    def compact(self) -> int:
        return int(self.call("POST", "/_test/compact")["revision"])

    def deny(self, verb: str, resource: str, code: int = 403) -> None:
        self.call("POST", "/_test/deny", {"verb": verb, "resource": resource, "code": code})

    def inject_frame(self, frame: bytes) -> int:
        return int(
            self.call("POST", "/_test/inject-frame", frame, content_type="application/octet-stream")[
                "injected"
            ]
        )

    def allow_all(self) -> None:
        self.call("POST", "/_test/allow-all")

    def requests(self) -> list[JSON]:
        return self.call("GET", "/_test/requests")

    def clear_requests(self) -> None:
        self.call("POST", "/_test/clear-requests")


class AsyncKubeApiControl:
    """The same helpers with aiohttp (``async with AsyncKubeApiControl(url) as api: ...``)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=self.timeout))
        data = json.dumps(body).encode() if body is not None else None
        async with self._session.request(
            method, self.url + path, data=data, headers={"Content-Type": content_type}
        ) as resp:
            raw = await resp.read()
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = raw.decode("utf-8", "replace")
            if resp.status >= 300:
                raise KubeApiError(resp.status, decoded)
            return decoded

    async def list_nodes(self) -> JSON:
        return await self.call("GET", "/api/v1/nodes")

    async def get_node(self, name: str) -> JSON:
        return await self.call("GET", _path(name, False))

    async def create_node(self, node: JSON) -> JSON:
        return await self.call("POST", "/api/v1/nodes", node)

    async def replace_node(self, node: JSON, *, status: bool = False) -> JSON:
        return await self.call("PUT", _path(node["metadata"]["name"], status), node)

    async def patch_node(
        self, name: str, patch: Any, *, status: bool = False, content_type: str = STRATEGIC_MERGE_PATCH
    ) -> JSON:
        return await self.call("PATCH", _path(name, status), patch, content_type)

    async def delete_node(self, name: str) -> JSON:
        return await self.call("DELETE", _path(name, False))

    async def drop_watches(self, clean: bool = False) -> int:
        return int(
            (await self.call("POST", "/_test/drop-watches" + ("?clean=1" if clean else "")))["dropped"]
        )

    async def compact(self) -> int:
        return int((await self.call("POST", "/_test/compact"))["revision"])

    async def deny(self, verb: str, resource: str) -> None:
        await self.call("POST", "/_test/deny", {"verb": verb, "resource": resource})

    async def allow_all(self) -> None:
        await self.call("POST", "/_test/allow-all")

    async def requests(self) -> list[JSON]:
        return await self.call("GET", "/_test/requests")

    async def clear_requests(self) -> None:
        await self.call("POST", "/_test/clear-requests")


class KubeApiProcess:
    """``python -m flannel_testkit.kubeapi`` as a child process.

    ``wrap`` prefixes the command line (e.g. ``["ip", "netns", "exec", "ns1"]`` to serve inside a
    network namespace). ``stop()`` ends the child's process group (it runs in its own session).
    """

    def __init__(
        self,
        etcd_endpoint: str,
        prefix: str,
        listen: str = "127.0.0.1:0",
        *,
        wrap: Sequence[str] = (),
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.etcd_endpoint, self.prefix, self.listen = etcd_endpoint, prefix, listen
        self.wrap, self.log_path, self.extra_args = list(wrap), log_path, list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.host, self.port = "", 0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{self.port}"

    @property
    def control(self) -> KubeApiControl:
        return KubeApiControl(self.url)

    def start(self, timeout: float = 20.0) -> Self:
        root = Path(__file__).resolve().parents[1]  # where the package is importable from
        argv = [
            *self.wrap,
            sys.executable,
            "-m",
            "flannel_testkit.kubeapi",
            "--etcd-endpoint",
            self.etcd_endpoint,
            "--prefix",
            self.prefix,
            "--listen",
            self.listen,
            *self.extra_args,
        ]
        stderr: Any = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=stderr, cwd=root, start_new_session=True
            )
        finally:
            if stderr is not None:
                stderr.close()
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        out = b""
        while b"\n" not in out:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                self.stop()
                raise RuntimeError(f"kubeapi did not start within {timeout}s: {out!r}")
            out += chunk
        line = out.split(b"\n", 1)[0].decode()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"kubeapi did not start: {line!r}")
        self.host, _, port = line[len("listening on ") :].rpartition(":")
        self.host = self.host.strip("[]")
        self.port = int(port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(etcd_endpoint: str, prefix: str, **kwargs: Any) -> Iterator[KubeApiProcess]:
    """Start the server as a child process for the ``with`` block."""
    with KubeApiProcess(etcd_endpoint, prefix, **kwargs) as server:
        yield server


# ---- command line -------------------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    server = KubeApiServer(
        args.etcd_endpoint,
        args.prefix,
        host,
        int(port),
        user=args.user,
        bookmark_interval=args.bookmark_interval,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{server.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flannel_testkit.kubeapi",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--etcd-endpoint", action="append", required=True, help="etcd client URL (repeat for several members)"
    )
    parser.add_argument(
        "--prefix", default="/registry", help="etcd key prefix; Nodes live at PREFIX/minions/NAME"
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve on (port 0: a free port)")
    parser.add_argument("--user", default=DEFAULT_USER, help="the user named in 403 messages")
    parser.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds between BOOKMARKs")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
