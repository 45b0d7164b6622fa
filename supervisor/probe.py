"""grpc.health.v1 ``Check`` over a unix socket, spoken directly (HTTP/2 frames, HPACK headers, the two tiny
protobuf messages), so that flanneld does not load the gRPC library (~11 MB resident) only to probe.

A :class:`Connection` is kept between probes (a new one per probe cost the child's gRPC server ~0.5 ms
and flanneld ~0.7 ms of CPU more per probe): the client preface and an empty SETTINGS frame once, then
each probe is the request on the next client stream (HEADERS, then DATA with END_STREAM); the answer is
read until that stream ends, answering the server's SETTINGS and PINGs and handing back the connection
window its DATA used. Any failure closes the connection; a kept one that fails other than by the timeout (the child
restarted, or its server said GOAWAY) is replaced once within the same probe, so a probe answers what a
fresh connection would, and a hung child is still no answer within the timeout.

What the child answered maps to the health status names of
``grpc.health.v1.HealthCheckResponse.ServingStatus``: the status in the reply, ``SERVICE_UNKNOWN`` for
grpc-status NOT_FOUND, ``UNKNOWN`` for any other error or a reply that is not a health answer. No answer at
all (no socket, refused, reset, GOAWAY, REFUSED_STREAM, grpc-status UNAVAILABLE or DEADLINE_EXCEEDED, the
timeout) is ``None``.

Bounded: frames larger than HTTP/2's default maximum (16 KiB), header blocks over 16 KiB and replies over
64 KiB are refused (``UNKNOWN``): a health answer is a few dozen bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0,
    0x1,
    0x3,
    0x4,
    0x6,
    0x7,
    0x8,
    0x9,
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
REFUSED_STREAM = 0x7
MAX_FRAME = 16_384  #: HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which we never raise
MAX_HEADER_BLOCK = 16_384
MAX_REPLY = 65_536
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
GRPC_NOT_FOUND, GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE = 5, 4, 14
LAST_STREAM = (1 << 31) - 1  #: client streams are odd and never reused: a new connection after the last


class NoAnswer(Exception):
    """The child did not answer (not listening, hung up, refused the stream, said UNAVAILABLE)."""


class BadAnswer(Exception):
    """The child answered something that is not a health answer."""


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def request_headers(service: str = "") -> tuple[bytes, bytes]:
    """The Check call for ``service``: its header block (literals and static-table references only, so the
    same bytes on every stream of a connection) and its DATA payload."""
    name = service.encode()
    if len(name) > 127:
        raise ValueError(f"service name {service[:40]!r}... longer than 127 bytes")
    message = (b"\x0a" + bytes((len(name),)) + name) if name else b""  # HealthCheckRequest.service (1)
    headers = hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
        huffman=False,
    )
    return headers, b"\x00" + struct.pack(">I", len(message)) + message


def _unpad(flags: int, payload: bytes, priority: bool = False) -> bytes:
    if flags & PADDED:
        if not payload or payload[0] >= len(payload):
            raise BadAnswer("a padded frame with more padding than payload")
        payload = payload[1 : len(payload) - payload[0]]
    if priority and flags & PRIORITY:
        payload = payload[5:]
    return payload


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    raise BadAnswer("a truncated protobuf varint")


def serving_status(message: bytes) -> str:
    """The ``status`` (field 1) of a HealthCheckResponse, as its enum name; other fields are skipped."""
    status, at = 0, 0
    while at < len(message):
        key, at = _varint(message, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(message, at)
            if field == 1:
                status = value
        elif wire == 2:
            size, at = _varint(message, at)
            at += size
        elif wire == 5:
            at += 4
        elif wire == 1:
            at += 8
        else:
            raise BadAnswer(f"protobuf wire type {wire} in a health answer")
    if at != len(message):
        raise BadAnswer("a truncated health answer")
    return STATUS_NAMES.get(status, "UNKNOWN")


def interpret(headers: dict[str, str], body: bytes) -> str:
    """The status name of a finished reply (headers and trailers merged, the DATA bytes)."""
    if headers.get(":status", "200") != "200":
        raise BadAnswer(f"HTTP status {headers.get(':status')}")
    code = headers.get("grpc-status")
    if code is not None and code != "0":
        if code in (str(GRPC_UNAVAILABLE), str(GRPC_DEADLINE_EXCEEDED)):
            raise NoAnswer(f"grpc-status {code}")
        return "SERVICE_UNKNOWN" if code == str(GRPC_NOT_FOUND) else "UNKNOWN"
    if len(body) < 5:
        raise BadAnswer("no health answer in the reply")
    compressed, size = body[0], struct.unpack(">I", body[1:5])[0]
    if compressed or size != len(body) - 5:
        raise BadAnswer("the reply is not one uncompressed message")
    return serving_status(body[5:])


async def exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    decoder: hpack.Decoder,
    stream: int,
    request: bytes,
) -> str:
    """Send ``request`` (on client stream ``stream``) and read the reply until that stream ends; its status
    name. ``decoder`` is the connection's: the server's header compression spans its replies."""
    writer.write(request)
    await writer.drain()
    headers: dict[str, str] = {}
    block = b""
    body = b""
    received = 0
    ended = False
    while True:
        try:
            head = await reader.readexactly(9)
            size = int.from_bytes(head[:3], "big")
            if size > MAX_FRAME:
                raise BadAnswer(f"a {size}-byte frame, more than {MAX_FRAME}")
            payload = await reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise NoAnswer("the connection closed before the answer") from exc
        received += 9 + size
        if received > MAX_REPLY:
            raise BadAnswer(f"more than {MAX_REPLY} bytes without an answer")
        kind, flags, on = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if kind == DATA and size:  # hand back the connection's window (each stream's is fresh)
            writer.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", size)))
        if kind == SETTINGS and not flags & ACK:
            writer.write(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            writer.write(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF if len(payload) >= 4 else 0
            if last_stream < stream:
                raise NoAnswer("the server is going away")
        elif on != stream:
            continue
        elif kind == RST_STREAM:
            code = int.from_bytes(payload[:4], "big") if len(payload) >= 4 else 0
            if code == REFUSED_STREAM:
                raise NoAnswer("the server refused the stream")
            raise BadAnswer(f"the server reset the stream (HTTP/2 error {code})")
        elif kind in (HEADERS, CONTINUATION):
            block += _unpad(flags, payload, priority=True) if kind == HEADERS else payload
            if len(block) > MAX_HEADER_BLOCK:
                raise BadAnswer(f"a header block over {MAX_HEADER_BLOCK} bytes")
            if flags & END_HEADERS:
                try:
                    decoded = decoder.decode(block, raw=False)
                except hpack.HPACKError as exc:
                    raise BadAnswer(f"undecodable headers ({type(exc).__name__})") from None
                headers.update((str(name), str(value)) for name, value in decoded)
                block = b""
        elif kind == DATA:
            body += _unpad(flags, payload)
        if on == stream and kind in (HEADERS, DATA) and flags & END_STREAM:
            ended = True
        if ended and not block:
            return interpret(headers, body)


class Connection:
    """Health checks of ``service`` on the server at unix socket ``socket``, over one kept connection."""

    def __init__(self, socket: os.PathLike[str] | str, service: str = "") -> None:
        self._socket = os.fspath(socket)
        self._request = request_headers(service)
        self._open: tuple[asyncio.StreamReader, asyncio.StreamWriter, hpack.Decoder] | None = None
        self._stream = -1  # the last client stream used on the open connection

    async def check(self, timeout: float) -> str | None:
        """One Check: the status name the server answered, or None when it did not answer within
        ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                kept = self._open is not None
                try:
                    return await self._exchange()
                except (NoAnswer, OSError):
                    if not kept:
                        raise  # a fresh connection: that is the answer
                    self._drop()  # a kept one: the child may have restarted; ask on a fresh one
                    return await self._exchange()
        except (NoAnswer, OSError, TimeoutError):
            await self.close()
            return None
        except BadAnswer:
            await self.close()
            return "UNKNOWN"
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            self._drop()
            raise

    async def _exchange(self) -> str:
        if self._open is None or self._stream + 2 > LAST_STREAM:
            self._drop()
            reader, writer = await asyncio.open_unix_connection(self._socket, limit=MAX_FRAME + 9)
            decoder = hpack.Decoder()
            decoder.max_header_list_size = MAX_HEADER_BLOCK
            self._open, self._stream = (reader, writer, decoder), -1
            writer.write(PREFACE + frame(SETTINGS, 0, 0))
        reader, writer, decoder = self._open
        self._stream += 2
        headers, data = self._request
        request = frame(HEADERS, END_HEADERS, self._stream, headers) + frame(
            DATA, END_STREAM, self._stream, data
        )
        return await exchange(reader, writer, decoder, self._stream, request)

    def _drop(self) -> asyncio.StreamWriter | None:
        """Forget the connection and start closing it; its writer, if there was one."""
        if self._open is None:
            return None
        writer = self._open[1]
        self._open = None
        writer.close()
        return writer

    async def close(self) -> None:
        """Close the connection (the next check opens a new one)."""
        writer = self._drop()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def check(socket: os.PathLike[str] | str, timeout: float, service: str = "") -> str | None:
    """One Check of ``service`` on the server at unix socket ``socket`` on a connection of its own: the
    status name it answered, or None when it did not answer within ``timeout`` seconds."""
    connection = Connection(socket, service)
    try:
        return await connection.check(timeout)
    finally:
        await connection.close()
