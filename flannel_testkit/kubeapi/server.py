"""The HTTP server: Nodes in a real etcd, served with the semantics the official client can see
(see the package's description)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from flannel_testkit.kubeapi.nodes import DEFAULT_USER, JSON, NODE_NAME, rfc3339_now
from flannel_testkit.kubeapi.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_TYPES,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from flannel_testkit.kubeapi.selectors import BadRequest, everything, matcher
from lease_service.etcd import EtcdClient, EtcdSettings, WatchCompacted
from lease_service.etcd.client import prefix_range_end
from lease_service.etcd.errors import EtcdError

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
        matches = matcher(request.query)
        if _truthy(request.query.get("watch")):
            self._authorize("watch", "nodes")
            return await self._watch(request, matches)
        self._authorize("list", "nodes")
        try:
            limit = int(request.query.get("limit") or 0)
        except ValueError:
            raise BadRequest("invalid limit") from None
        token = request.query.get("continue", "")
        meta: JSON
        if token or limit > 0:
            # A page read from etcd at the list's revision, as kube-apiserver's etcd3 store reads a list with
            # a limit (the continue token names the revision and the next key): the first page costs its own
            # keys, not every Node's.
            kvs, revision, following = await self._page(token, limit)
            meta = {"resourceVersion": str(revision)}
            if following is not None:
                meta["continue"] = following
        else:
            kvs, revision = await self.etcd.get_prefix(self.node_prefix)
            meta = {"resourceVersion": str(revision)}
        if matches is everything:  # the stored bytes, spliced: no decode and encode of every Node
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

    async def _page(self, token: str, limit: int) -> tuple[list[Any], int, str | None]:
        """One page of a list: its keys, the list's revision, and the continue token of the next page (None:
        the last). ``limit`` 0 with a token: the rest of the list at once."""
        start, end = self.node_prefix.encode(), prefix_range_end(self.node_prefix.encode())
        revision = 0
        if token:
            try:
                rv_text, _, key_text = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
                revision, start = int(rv_text), base64.urlsafe_b64decode(key_text.encode())
                if revision <= 0 or not start.startswith(self.node_prefix.encode()):
                    raise ValueError(token)
            except ValueError:
                raise BadRequest("invalid continue token") from None
        try:
            kvs, more, revision = await self.etcd.range_page(start, end, limit, revision)
        except EtcdError as exc:
            if exc.code != "OUT_OF_RANGE":
                raise
            raise ApiError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result.",
            ) from None
        if not (more and kvs):
            return kvs, revision, None
        after = kvs[-1].key.encode("utf-8", "surrogateescape") + b"\x00"  # the next key in etcd's order
        following = f"{revision}|{base64.urlsafe_b64encode(after).decode()}"
        return kvs, revision, base64.urlsafe_b64encode(following.encode()).decode()

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
                            if matches is everything
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
        meta["creationTimestamp"] = rfc3339_now()
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
        if not NODE_NAME.match(str(meta.get("name", ""))) or len(str(meta.get("name"))) > 253:
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
