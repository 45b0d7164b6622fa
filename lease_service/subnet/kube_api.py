"""The few Kubernetes API calls flannel makes, over raw HTTP, decoded into compact typed values.

A Node object from kubelet is ~10 KB of JSON (most of it the image list and the conditions); a lease
needs its name, uid, resourceVersion, pod CIDRs and annotations. ``msgspec`` decodes the JSON straight
into the small structs below and skips every other field without building Python objects for it, so
a heartbeat (a status update) costs a parse, not a tree of dicts, and nothing of the Node is kept.
Lists are read in pages of :data:`PAGE_SIZE` (``limit``/``continue``, as client-go's reflector does),
so the lease service never holds a whole NodeList of thousands of nodes.

Errors: :class:`ApiStatus` for an HTTP error answer (status and the Status object's message); the
transport's own (``aiohttp.ClientError``, ``TimeoutError``, ``OSError``) pass through;
``msgspec.DecodeError``/``ValidationError`` for answers that are not the JSON they should be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from lease_service.subnet.kube_config import BearerToken, KubeConnection

PAGE_SIZE = 500                     # Nodes per list page (client-go's default)
MAX_FRAME = 16 * 1024 * 1024        # bytes of one watch event at most (a Node is limited to ~1.5 MB by etcd)
USER_AGENT = "flannel-py"


class NodeMeta(msgspec.Struct, frozen=True, gc=False):
    name: str = "?"
    uid: str = ""
    resourceVersion: str = ""  # noqa: N815 - the API's field name
    annotations: dict[str, str] | None = None


class NodeSpec(msgspec.Struct, frozen=True, gc=False):
    podCIDR: str = ""  # noqa: N815
    podCIDRs: tuple[str, ...] = ()  # noqa: N815


class NodeView(msgspec.Struct, frozen=True, gc=False):
    """What a lease needs of a Node; every other field is skipped while decoding."""

    metadata: NodeMeta = NodeMeta()
    spec: NodeSpec = NodeSpec()


class _ListMeta(msgspec.Struct, frozen=True, gc=False):
    resourceVersion: str = ""  # noqa: N815
    continue_: str = msgspec.field(default="", name="continue")


class NodeList(msgspec.Struct, frozen=True, gc=False):
    metadata: _ListMeta = _ListMeta()
    items: list[NodeView] = msgspec.field(default_factory=list)


class WatchObject(msgspec.Struct, frozen=True, gc=False):
    """A watch event's object: a Node (or a BOOKMARK's bare metadata), or a Status for ERROR."""

    metadata: NodeMeta = NodeMeta()
    spec: NodeSpec = NodeSpec()
    code: int = 0
    reason: str = ""
    message: str = ""

    def node(self) -> NodeView:
        return NodeView(self.metadata, self.spec)


class WatchEvent(msgspec.Struct, frozen=True, gc=False):
    type: str
    object: WatchObject = WatchObject()


class _Status(msgspec.Struct, frozen=True, gc=False):
    message: str = ""
    reason: str = ""


LIST_DECODER = msgspec.json.Decoder(NodeList)
EVENT_DECODER = msgspec.json.Decoder(WatchEvent)
NODE_DECODER = msgspec.json.Decoder(NodeView)
_STATUS_DECODER = msgspec.json.Decoder(_Status)
_ANY_DECODER = msgspec.json.Decoder()


def view_of(node: dict[str, Any]) -> NodeView:
    """A NodeView of a Node already decoded as plain JSON; raises msgspec.ValidationError on a bad shape."""
    return msgspec.convert(node, NodeView)


class ApiStatus(Exception):
    """An HTTP error answer from the API server: ``status`` and the Status object's message."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        try:
            self.message = _STATUS_DECODER.decode(body).message if body else ""
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.message = body[:200].decode(errors="replace")
        super().__init__(f"{status}: {self.message}")


class KubeApi:
    """A connection pool to one API server with our credentials; create and close inside the loop."""

    def __init__(self, conn: KubeConnection) -> None:
        self.server = conn.server
        self._token = BearerToken(conn)
        self._ssl = conn.ssl_context()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=4)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        auth = self._token.header()
        if auth is not None:
            headers["Authorization"] = auth
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, query: dict[str, str] | None = None,
                      body: bytes | None = None, content_type: str | None = None, timeout: float = 30) -> bytes:
        """One call; the answer's body, or ApiStatus for a status >= 400."""
        async with self._client().request(
                method, self.server + path, params=query, data=body, headers=self._headers(content_type),
                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            data = await resp.read()
            if resp.status >= 400:
                raise ApiStatus(resp.status, data)
            return data

    async def get_json(self, path: str) -> dict[str, Any]:
        """One object as plain JSON."""
        doc = _ANY_DECODER.decode(await self.request("GET", path))
        if not isinstance(doc, dict):
            raise msgspec.ValidationError(f"GET {path} answered a JSON {type(doc).__name__}, not an object")
        return doc

    async def get_node(self, name: str) -> dict[str, Any]:
        """One Node as plain JSON (our own node: acquire reads its status conditions too)."""
        return await self.get_json(f"/api/v1/nodes/{name}")

    async def patch_node_status(self, name: str, patch: dict[str, Any], content_type: str) -> None:
        await self.request("PATCH", f"/api/v1/nodes/{name}/status", body=msgspec.json.encode(patch),
                           content_type=content_type)

    async def list_nodes(self, page_size: int = PAGE_SIZE, timeout: float = 60) -> AsyncIterator[NodeList]:
        """The pages of one consistent list (every page at the first page's resourceVersion)."""
        token = ""
        while True:
            query = {"limit": str(page_size)}
            if token:
                query["continue"] = token
            page = LIST_DECODER.decode(await self.request("GET", "/api/v1/nodes", query=query, timeout=timeout))
            yield page
            token = page.metadata.continue_
            if not token:
                return

    async def watch_nodes(self, resource_version: int, timeout_seconds: int) -> AsyncIterator[bytes]:
        """The raw JSON lines of one watch (bookmarks on, ends when the server's timeout closes it)."""
        query = {"watch": "1", "resourceVersion": str(resource_version), "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds)}
        async with self._client().get(
                self.server + "/api/v1/nodes", params=query, headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_read=timeout_seconds + 30)) as resp:
            if resp.status >= 400:
                raise ApiStatus(resp.status, await resp.read())
            pending = bytearray()
            async for chunk in resp.content.iter_any():
                pending += chunk
                start = 0
                while (end := pending.find(b"\n", start)) >= 0:
                    if end > start:
                        yield bytes(pending[start:end])
                    start = end + 1
                del pending[:start]
                if len(pending) > MAX_FRAME:
                    raise FrameTooLarge(f"a watch event longer than {MAX_FRAME} bytes")
            if pending.strip():
                yield bytes(pending)


class FrameTooLarge(ValueError):
    """A watch event beyond :data:`MAX_FRAME`."""
