"""The few Kubernetes API calls flannel makes, over raw HTTP, decoded into compact typed values.

A Node object from kubelet is ~10 KB of JSON (most of it the image list and the conditions); a lease
needs its name, uid, resourceVersion, pod CIDRs and annotations. ``msgspec`` decodes the JSON straight
into the small structs below and skips every other field without building Python objects for it, so
a heartbeat (a status update) costs a parse, not a tree of dicts, and nothing of the Node is kept.
Lists are read in pages of :data:`PAGE_SIZE` (``limit``/``continue``, as client-go's reflector does),
so the lease service never holds a whole NodeList of thousands of nodes.

HTTP/1.1 is spoken here over asyncio streams (TLS through ``ssl``): an HTTP library cost ~8 MB of RSS
for the handful of calls flannel makes. Errors: :class:`ApiStatus` for an HTTP error answer (status
and the Status object's message); :class:`HttpError` (an ``OSError``) for a broken answer or
connection, ``TimeoutError`` and ``OSError`` from the transport;
``msgspec.DecodeError``/``ValidationError`` for answers that are not the JSON they should be.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import msgspec

from lease_service.subnet.kube_config import BearerToken, KubeConnection

#: Nodes per list page. client-go's reflector asks for 500; a page is held whole while it is decoded, and
#: 500 kubelet Nodes are ~5 MB of JSON (the lease service's peak RSS at 5,000 Nodes was 7 MB higher with
#: 500 than with 100; the extra round trips cost nothing measurable).
PAGE_SIZE = 100
MAX_FRAME = 16 * 1024 * 1024  # bytes of one watch event at most (a Node is limited to ~1.5 MB by etcd)
USER_AGENT = "flannel-py"
MAX_LINE = 64 * 1024  # bytes of a status, header or chunk-size line
MAX_HEADERS = 100
MAX_BODY = 1024 * 1024 * 1024  # bytes of one answer (a page of 100 kubelet Nodes is ~1 MB)


class NodeMeta(msgspec.Struct, frozen=True, gc=False):
    name: str = "?"
    uid: str = ""
    resourceVersion: str = ""
    annotations: dict[str, str] | None = None


class NodeSpec(msgspec.Struct, frozen=True, gc=False):
    podCIDR: str = ""
    podCIDRs: tuple[str, ...] = ()


class NodeView(msgspec.Struct, frozen=True, gc=False):
    """What a lease needs of a Node; every other field is skipped while decoding."""

    metadata: NodeMeta = NodeMeta()
    spec: NodeSpec = NodeSpec()


class _ListMeta(msgspec.Struct, frozen=True, gc=False):
    resourceVersion: str = ""
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


class HttpError(OSError):
    """The server broke HTTP/1.1 (a bad status line, header, chunk) or closed the connection mid-answer."""


def _status_of(status_line: bytes) -> int:
    """The status of an HTTP/1.x status line; HttpError for anything else."""
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.1 answer: {status_line[:80]!r}")
    return int(parts[1])


def _add_header(headers: dict[str, str], raw: bytes) -> None:
    name, sep, value = raw.decode("latin-1").partition(":")
    if not sep:
        raise HttpError(f"a header line without a colon: {raw[:80]!r}")
    headers[name.strip().lower()] = value.strip()


def _delimited_by_close(headers: dict[str, str]) -> bool:
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()


class _Connection:
    """One HTTP/1.1 connection (TLS or not)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()

    async def send(self, head: bytes, body: bytes | None) -> None:
        self.writer.write(head + body if body else head)
        await self.writer.drain()

    async def line(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise HttpError("the API server closed the connection") from exc
        except asyncio.LimitOverrunError as exc:
            raise HttpError(f"a header or chunk line longer than {MAX_LINE} bytes") from exc

    async def exactly(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise HttpError("the API server closed the connection mid-answer") from exc

    async def head(self) -> tuple[int, dict[str, str]]:
        """The status and the headers (names in lower case) of the next answer."""
        status = _status_of(await self.line())
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            raw = await self.line()
            if raw in (b"\r\n", b"\n"):
                return status, headers
            _add_header(headers, raw)
        raise HttpError(f"more than {MAX_HEADERS} headers")

    async def body_parts(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The body as it arrives: chunked, Content-Length or until the connection closes."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = (await self.line()).split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise HttpError(f"a bad chunk size {size_line[:20]!r}") from None
                if size == 0:
                    while (await self.line()).strip():  # trailers
                        pass
                    return
                data = await self.exactly(size)
                await self.exactly(2)
                yield data
        elif "content-length" in headers:
            try:
                left = int(headers["content-length"])
            except ValueError:
                raise HttpError(f"a bad Content-Length {headers['content-length'][:20]!r}") from None
            while left > 0:
                data = await self.reader.read(min(left, 1 << 20))
                if not data:
                    raise HttpError("the API server closed the connection mid-answer")
                left -= len(data)
                yield data
        else:
            while data := await self.reader.read(1 << 20):
                yield data


class KubeApi:
    """HTTP/1.1 to one API server with our credentials (one kept-alive connection for calls, one per
    watch); create and close inside the loop."""

    def __init__(self, conn: KubeConnection) -> None:
        self.server = conn.server
        url = urlsplit(conn.server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"the Kubernetes API URL {conn.server!r} is not http(s)://host[:port]")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._authority = url.netloc.rpartition("@")[2]
        self._base = url.path.rstrip("/")
        self._token = BearerToken(conn)
        self._ssl = conn.ssl_context()
        self._idle: _Connection | None = None

    async def close(self) -> None:
        if self._idle is not None:
            self._idle.close()
            self._idle = None

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl else None,
            limit=MAX_LINE,
        )
        return _Connection(reader, writer)

    def _head(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: bytes | None,
        content_type: str | None,
    ) -> bytes:
        target = self._base + path + ("?" + urlencode(query) if query else "")
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self._authority}",
            f"User-Agent: {USER_AGENT}",
            "Accept: application/json",
        ]
        auth = self._token.header()
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        if body is not None:
            lines += [f"Content-Type: {content_type or 'application/json'}", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float = 30,
    ) -> bytearray:
        """One call; the answer's body, or ApiStatus for a status >= 400."""
        head = self._head(method, path, query, body, content_type)
        async with asyncio.timeout(timeout):
            for attempt in (0, 1):
                conn, reused = (
                    (self._idle, True) if self._idle is not None else (await self._connect(), False)
                )
                self._idle = None
                try:
                    await conn.send(head, body)
                    try:
                        status, headers = await conn.head()
                    except (HttpError, ConnectionError):
                        if reused and attempt == 0:  # the server closed the idle connection: a fresh one
                            conn.close()
                            continue
                        raise
                    data = bytearray()
                    async for part in conn.body_parts(headers):
                        data += part
                        if len(data) > MAX_BODY:
                            raise HttpError(f"an answer longer than {MAX_BODY} bytes")
                except BaseException:
                    conn.close()
                    raise
                if headers.get("connection", "").lower() == "close" or _delimited_by_close(headers):
                    conn.close()
                else:
                    if self._idle is not None:
                        self._idle.close()
                    self._idle = conn
                if status >= 400:
                    raise ApiStatus(status, bytes(data))
                return data  # not copied into bytes: a page of Nodes is ~1 MB
        raise HttpError("unreachable")  # pragma: no cover - the loop returns or raises

    async def get_json(self, path: str) -> dict[str, Any]:
        """One object as plain JSON."""
        doc = _ANY_DECODER.decode(await self.request("GET", path))
        if not isinstance(doc, dict):
            raise msgspec.ValidationError(f"GET {path} answered a JSON {type(doc).__name__}, not an object")
        return doc

    async def get_node(self, name: str) -> dict[str, Any]:
        """One Node as plain JSON (our own node: acquire reads its status conditions too)."""
        return await self.get_json(f"/api/v1/nodes/{quote(name, safe='')}")

    async def patch_node_status(self, name: str, patch: dict[str, Any], content_type: str) -> None:
        await self.request(
            "PATCH",
            f"/api/v1/nodes/{quote(name, safe='')}/status",
            body=msgspec.json.encode(patch),
            content_type=content_type,
        )

    async def list_nodes(
        self, page_size: int = PAGE_SIZE, timeout: float = 60
    ) -> AsyncGenerator[NodeList, None]:
        """The pages of one consistent list (every page at the first page's resourceVersion). The next page
        is asked for before a page is handed on, so the server makes it while the caller works on this one
        (the request is on the wire before the caller runs: one loop pass after the task is created)."""
        fetch = asyncio.create_task(self._page(page_size, "", timeout), name="list-nodes-page")
        try:
            while True:
                page = await fetch
                token = page.metadata.continue_
                if token:
                    fetch = asyncio.create_task(self._page(page_size, token, timeout), name="list-nodes-page")
                    await asyncio.sleep(0)
                yield page
                if not token:
                    return
        finally:
            if not fetch.done():  # the caller stopped early: the next page is not wanted
                fetch.cancel()
                fetch.add_done_callback(_retrieved)

    async def _page(self, page_size: int, token: str, timeout: float) -> NodeList:
        query = {"limit": str(page_size)}
        if token:
            query["continue"] = token
        return LIST_DECODER.decode(await self.request("GET", "/api/v1/nodes", query=query, timeout=timeout))

    async def watch_nodes(
        self, resource_version: int, timeout_seconds: int, on_line: Callable[[bytes | bytearray], None]
    ) -> None:
        """One watch (bookmarks on): ``on_line`` gets each raw JSON line as it arrives, in the callback that
        received it (no task wakes per event: at 50 heartbeats a second the wakeups were most of the CPU).
        Returns when the server's timeout ends the stream; raises what ``on_line`` raised, ApiStatus for an
        error answer, HttpError/OSError for a broken stream, FrameTooLarge, TimeoutError."""
        query = {
            "watch": "1",
            "resourceVersion": str(resource_version),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        request = self._head("GET", "/api/v1/nodes", query, None, None)
        async with asyncio.timeout(timeout_seconds + 30):
            transport, _ = await loop.create_connection(
                lambda: _WatchStream(request, on_line, done),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
            try:
                await done
            finally:
                transport.close()


def _retrieved(task: asyncio.Task[NodeList]) -> None:
    """A cancelled page request's outcome, read so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


class _WatchStream(asyncio.Protocol):
    """An HTTP/1.1 watch answer parsed as it arrives: the head, then the body (chunked, Content-Length or
    until close) split into lines for ``on_line``; an error answer's body becomes ApiStatus. The outcome
    (None when the body ended, else the exception) is set on ``done``."""

    def __init__(
        self, request: bytes, on_line: Callable[[bytes | bytearray], None], done: asyncio.Future[None]
    ) -> None:
        self._request, self._on_line, self._done = request, on_line, done
        self._transport: asyncio.BaseTransport | None = None
        self._buf = bytearray()  # received, not parsed yet
        self._pending = bytearray()  # body bytes of a line not complete yet
        self._state = "head"  # then "size", "data", "crlf", "trailers" (chunked); "length"; "close"
        self._status = 0
        self._left = 0  # bytes still to come: of this chunk ("data"), of the body ("length")
        self._error_body: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)  # a stream connection's transport writes
        self._transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        self._buf += data
        try:
            if self._parse():
                self._end_body()
                self._finish(None)
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting watch_nodes, which raises it
            self._finish(exc)

    def eof_received(self) -> bool:
        return False  # close; connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done.done():
            return
        if self._state == "head":
            self._finish(HttpError("the API server closed the connection"))
        elif self._state != "close":
            self._finish(HttpError("the API server closed the connection mid-answer"))
        else:
            try:
                self._end_body()
            except Exception as error:  # noqa: BLE001
                self._finish(error)
            else:
                self._finish(None)

    def _finish(self, result: Exception | None) -> None:
        if not self._done.done():
            if result is None and self._error_body is not None:
                result = ApiStatus(self._status, bytes(self._error_body))
            if result is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(result)
        if self._transport is not None:
            self._transport.close()

    def _line_end(self, start: int) -> int:
        """Where the line starting at ``start`` of the buffer ends (after its newline), or -1."""
        end = self._buf.find(b"\n", start)
        if end < 0 and len(self._buf) - start > MAX_LINE:
            raise HttpError(f"a header or chunk line longer than {MAX_LINE} bytes")
        return end + 1 if end >= 0 else -1

    def _parse(self) -> bool:
        """Consume what the buffer holds; True once the body is complete."""
        buf, pos = self._buf, 0
        try:
            while True:
                state = self._state
                if state in ("data", "length", "close"):
                    take = len(buf) - pos if state == "close" else min(self._left, len(buf) - pos)
                    if take:
                        self._body(buf, pos, pos + take)
                        pos += take
                    if state == "close":
                        return False
                    self._left -= take
                    if self._left:
                        return False
                    if state == "length":
                        return True
                    self._state = "crlf"
                    continue
                if state == "head":
                    end = self._head_end()
                    if end < 0:
                        return False
                    pos = end
                    if self._state == "length" and not self._left:
                        return True
                    continue
                end = self._line_end(pos)
                if end < 0:
                    return False
                line = bytes(buf[pos:end])
                pos = end
                if state == "crlf":
                    self._state = "size"
                elif state == "trailers":
                    if not line.strip():
                        return True
                else:  # a chunk size line
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                    except ValueError:
                        raise HttpError(f"a bad chunk size {size_text[:20]!r}") from None
                    self._state, self._left = ("data", size) if size else ("trailers", 0)
        finally:
            del buf[:pos]

    def _head_end(self) -> int:
        """Parse the head once the buffer holds all of it: where it ends (-1: not all here yet)."""
        end = self._line_end(0)
        if end < 0:
            return -1
        status = _status_of(bytes(self._buf[:end]))
        headers: dict[str, str] = {}
        for count in itertools.count():
            start = end
            end = self._line_end(start)
            if end < 0:
                return -1
            raw = bytes(self._buf[start:end])
            if raw in (b"\r\n", b"\n"):
                break
            if count == MAX_HEADERS:
                raise HttpError(f"more than {MAX_HEADERS} headers")
            _add_header(headers, raw)
        self._status = status
        if status >= 400:
            self._error_body = bytearray()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "size"
        elif "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise HttpError(f"a bad Content-Length {headers['content-length'][:20]!r}") from None
            self._state = "length"
        else:
            self._state = "close"
        return end

    def _body(self, buf: bytearray, start: int, end: int) -> None:
        """Body bytes ``buf[start:end]``: an error answer's are kept (up to MAX_FRAME), a watch's are split
        into lines (a line within one read is handed on with one copy of it, not three)."""
        if self._error_body is not None:
            self._error_body += buf[start : min(end, start + MAX_FRAME - len(self._error_body))]
            return
        pending = self._pending
        while (newline := buf.find(b"\n", start, end)) >= 0:
            if pending:
                pending += buf[start:newline]
                line, self._pending = pending, bytearray()
                pending = self._pending
            else:
                line = buf[start:newline]
            if line:
                self._on_line(line)
            start = newline + 1
        if start < end:
            pending += buf[start:end]
            if len(pending) > MAX_FRAME:
                raise FrameTooLarge(f"a watch event longer than {MAX_FRAME} bytes")

    def _end_body(self) -> None:
        """The body ended: a last line without its newline is a line too."""
        if self._error_body is None and self._pending.strip():
            line = bytes(self._pending)
            self._pending.clear()
            self._on_line(line)


class FrameTooLarge(ValueError):
    """A watch event beyond :data:`MAX_FRAME`."""
