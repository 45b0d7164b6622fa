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
import contextlib
import itertools
import select
import socket
import ssl
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar
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
#: Seconds a watch's reader waits after a read while events come faster than one per this (see _WatchReader):
#: the most a real change waits for the heartbeats around it to share its read.
WATCH_HOLD = 0.05
#: Events a held read waits for at the rate they come, when that is shorter than the hold: at 500 heartbeats
#: a second a held read waits ~8 ms, not 50 (a real change's latency p50 ~9 ms instead of ~30, for 0.05 ms of
#: CPU per event instead of 0.035; at 50/s the hold is the 50 ms it was).
HELD_EVENTS = 4
T = TypeVar("T")


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

    def __init__(self, conn: KubeConnection, watch_hold: float = WATCH_HOLD) -> None:
        self.server = conn.server
        self.watch_hold = watch_hold
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
        self,
        resource_version: int,
        timeout_seconds: int,
        on_line: Callable[[bytes | bytearray], T | None],
        deliver: Callable[[list[T]], None] | None = None,
    ) -> None:
        """One watch (bookmarks on), read by a thread of its own (see :class:`_WatchReader`): ``on_line`` gets
        each raw JSON line in that thread and returns what the event loop must have of it (None: nothing);
        ``deliver`` gets those on the event loop, in order, a list per read. Returns when the server's timeout
        ends the stream; raises what ``on_line`` raised, ApiStatus for an error answer, HttpError/OSError for
        a broken stream, FrameTooLarge, TimeoutError, ``ssl`` errors."""
        query = {
            "watch": "1",
            "resourceVersion": str(resource_version),
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        request = self._head("GET", "/api/v1/nodes", query, None, None)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_seconds + 30):
            sock = await _connected(loop, self._host, self._port)
            reader = _WatchReader(
                sock, self._ssl, self._host, request, on_line, deliver, loop, self.watch_hold
            )
            try:
                await asyncio.shield(reader.done)
            finally:
                if not reader.done.done():  # cancelled or timed out: end the thread before going on
                    reader.stop()
                    await asyncio.shield(reader.done)


async def _connected(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A TCP connection to ``host:port`` made on the event loop (cancellable), as a plain socket."""
    error: OSError = OSError(f"{host}:{port} resolved to no address")
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    raise error


def _retrieved(task: asyncio.Task[NodeList]) -> None:
    """A cancelled page request's outcome, read so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


class _WatchReader:
    """A watch's socket read by a thread of its own, so that an event that changes nothing (a kubelet
    heartbeat, ~10 KB every 10 s per Node) never wakes the event loop: the thread blocks in ``recv``, parses
    what arrived, hands each line to ``on_line`` and posts to the loop only what ``on_line`` returned.
    At 50 events a second the asyncio protocol cost 0.21-0.25 ms of CPU per event, nearly all of it the wake
    (the same code takes ~30 us back to back); the thread 0.17-0.22.

    While events come faster than one per ``hold`` seconds, the thread sleeps after each read and takes what
    arrived meanwhile in one read: as long as :data:`HELD_EVENTS` events take to come at the rate of the last
    read, never longer than ``hold`` (a real change waits at most ``hold`` more, less when events come fast);
    the first read that finds nothing waiting ends the hold. 0.11 ms per event at 50/s with a 50 ms hold (the
    reflector alone, same run). The outcome (None, or the exception that ended the watch) is set on ``done``
    after the last delivery."""

    def __init__(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        host: str,
        request: bytes,
        on_line: Callable[[bytes | bytearray], Any],
        deliver: Callable[[list[Any]], None] | None,
        loop: asyncio.AbstractEventLoop,
        hold: float,
    ) -> None:
        self._sock, self._tls, self._host, self._request = sock, tls, host, request
        self._on_line, self._deliver, self._loop, self._hold = on_line, deliver, loop, hold
        self._batch: list[Any] = []
        self._lines = 0  # lines read so far
        self._lock = threading.Lock()  # the socket's shutdown (stop) against its close (the thread)
        self._stopping = False
        self.done: asyncio.Future[None] = loop.create_future()
        self.done.add_done_callback(_outcome_read)
        threading.Thread(target=self._run, name="kube-watch", daemon=True).start()

    def stop(self) -> None:
        """End the read from the event loop: the socket is shut down under the thread's blocking call."""
        with self._lock:
            self._stopping = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _line(self, line: bytes | bytearray) -> None:
        self._lines += 1
        item = self._on_line(line)
        if item is not None:
            self._batch.append(item)

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            if self._deliver is not None:
                self._loop.call_soon_threadsafe(self._deliver, batch)

    def _run(self) -> None:
        outcome: BaseException | None = None
        try:
            self._read()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting watch_nodes, which raises it
            outcome = exc
        finally:
            self._flush()  # what came before the error is delivered first
            with self._lock:
                self._sock.close()
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                self._loop.call_soon_threadsafe(self._settle, outcome)

    def _settle(self, outcome: BaseException | None) -> None:
        if self.done.done():
            return
        if outcome is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(outcome)

    def _read(self) -> None:
        sock = self._sock
        sock.setblocking(True)
        if self._tls is not None:
            wrapped = self._tls.wrap_socket(sock, server_hostname=self._host, do_handshake_on_connect=False)
            with self._lock:
                self._sock = sock = wrapped
                if self._stopping:
                    return
            wrapped.do_handshake()
        sock.sendall(self._request)
        parser = _WatchParser(self._line)
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        ready = select.poll()
        ready.register(sock, select.POLLIN)
        hold, holding, last, full = self._hold, False, -1e9, False
        wait = hold
        while not self._stopping:
            if holding and not full:  # a full buffer: more is waiting, read it now
                time.sleep(wait)
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
                if not pending and not ready.poll(0):
                    holding = False  # nothing came while held: wait for the next event as it comes
                    continue
            n = sock.recv_into(buf)
            if not n:
                if not self._stopping:
                    parser.closed()
                return
            now = time.monotonic()
            holding = holding or now - last < hold
            lines = self._lines
            try:
                if parser.feed(view[:n]):
                    return
            finally:
                self._flush()
            if self._lines > lines:  # wait for about HELD_EVENTS events, never longer than the hold
                wait = min(hold, (now - last) / (self._lines - lines) * HELD_EVENTS)
            last, full = now, n == len(buf)


def _outcome_read(done: asyncio.Future[None]) -> None:
    """The watch's outcome, read so that asyncio does not report it as never retrieved (watch_nodes raises
    it, unless it was cancelled first)."""
    if not done.cancelled():
        done.exception()


class _WatchParser:
    """An HTTP/1.1 watch answer parsed as it arrives: the head, then the body (chunked, Content-Length or
    until close) split into lines for ``on_line``; an error answer's body becomes ApiStatus. ``feed`` is
    True once the answer is complete; errors are raised from ``feed`` and ``closed``."""

    def __init__(self, on_line: Callable[[bytes | bytearray], None]) -> None:
        self._on_line = on_line
        self._buf = bytearray()  # received, not parsed yet
        self._pending = bytearray()  # body bytes of a line not complete yet
        self._state = "head"  # then "size", "data", "crlf", "trailers" (chunked); "length"; "close"
        self._status = 0
        self._left = 0  # bytes still to come: of this chunk ("data"), of the body ("length")
        self._error_body: bytearray | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Parse what arrived; True once the answer is complete (raises ApiStatus for an error answer)."""
        self._buf += data
        if not self._parse():
            return False
        self._end_body()
        self._check_status()
        return True

    def closed(self) -> None:
        """The connection closed: raises unless that ends the answer."""
        if self._state == "head":
            raise HttpError("the API server closed the connection")
        if self._state != "close":
            raise HttpError("the API server closed the connection mid-answer")
        self._end_body()
        self._check_status()

    def _check_status(self) -> None:
        if self._error_body is not None:
            raise ApiStatus(self._status, bytes(self._error_body))

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
