"""A thin asyncio etcd v3 client on grpc.aio and our own stubs (``lease_service/etcd/proto``).

Unary calls get a per-attempt deadline and are retried on UNAVAILABLE / DEADLINE_EXCEEDED on the
next endpoint with jittered exponential back-off until the settings' retry budget is spent
(then :class:`EtcdUnavailable`). ``watch_prefix`` never gives up on a broken stream: it
reconnects with back-off and resumes after the last revision it delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio

from lease_service.etcd.errors import EtcdError, EtcdUnavailable, WatchCompacted
from lease_service.etcd.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from lease_service.etcd.settings import Endpoint, EtcdSettings

log = logging.getLogger(__name__)

R = TypeVar("R")
M = TypeVar("M", bound=Message)
Metadata = tuple[tuple[str, str], ...]

#: Keys per Range page in get_prefix (all pages are read at the first page's revision).
PAGE_SIZE = 1000
CONVERT_SLICE = 25
"""Keys converted between two turns of the event loop while a listing is converted page by page: the lease
service serves its callers while it lists (a page of 1,000 leases is ~60 ms of decoding, more on a busy
node; the gRPC server's own steps for a new caller each wait for a turn, and the backend's start-up makes
four calls one after the other while the stream lists: the health gate, the config, its lease, the
stream). 100 keys a turn kept each step waiting up to ~6 ms; at 10,000 leases the backend's first peer
came ~0.3 s later than with 25."""

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# etcd's answers to a missing, unknown or outdated auth token (they differ between versions).
_TOKEN_ERRORS = ("invalid auth token", "auth store is old", "user name is empty", "invalid auth")


@dataclass(frozen=True)
class KeyValue:
    """One etcd key: ``key`` decoded as UTF-8, ``lease`` 0 when none is attached."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    """A put or a delete; for a delete only ``kv.key`` and ``kv.mod_revision`` (the revision of
    the deletion) are meaningful."""

    type: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True)
class WatchBatch:
    """What one watch response brought.

    ``events`` hold all events of one or more whole revisions, in order. ``revision`` is the revision
    the watcher is now up to: for an event batch the last event's ``mod_revision`` (never ahead of
    what was delivered), for a progress notification (``progress=True``, no events) etcd's header
    revision.
    """

    events: tuple[WatchEvent, ...]
    revision: int
    progress: bool


class _Transient(Exception):
    """A stream ended or failed in a way that is worth retrying (like UNAVAILABLE)."""


class _Connection:
    """The channel and stubs for one endpoint."""

    def __init__(self, endpoint: Endpoint, channel: aio.Channel) -> None:
        self.endpoint = endpoint
        self.channel = channel
        # The generated grpc stubs are untyped; each call site names its response type (EtcdClient._unary).
        self.kv: Any = rpc_pb2_grpc.KVStub(channel)
        self.watch: Any = rpc_pb2_grpc.WatchStub(channel)
        self.lease: Any = rpc_pb2_grpc.LeaseStub(channel)
        self.auth: Any = rpc_pb2_grpc.AuthStub(channel)


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix" (clientv3.GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # empty prefix (or all 0xff): every key


def _kv(pb: kv_pb2.KeyValue) -> KeyValue:
    return KeyValue(
        key=pb.key.decode("utf-8", "surrogateescape"),
        value=pb.value,
        create_revision=pb.create_revision,
        mod_revision=pb.mod_revision,
        version=pb.version,
        lease=pb.lease,
    )


def _as_is(kv: KeyValue) -> KeyValue:
    return kv


def _event(pb: kv_pb2.Event) -> WatchEvent:
    return WatchEvent(type="delete" if pb.type == kv_pb2.Event.DELETE else "put", kv=_kv(pb.kv))


def _is_token_error(details: str) -> bool:
    lowered = details.lower()
    return any(marker in lowered for marker in _TOKEN_ERRORS)


def _may_have_been_applied(exc: BaseException) -> bool:
    """False only when the failed attempt certainly never reached etcd (no connection)."""
    if isinstance(exc, aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE:
        return "failed to connect" not in (exc.details() or "")
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, TimeoutError):
        return "no answer within the call timeout"
    return str(exc) or type(exc).__name__


class EtcdClient:
    """An asyncio etcd v3 client for the lease service: KV, leases, prefix watches.

    One gRPC channel per endpoint, opened lazily inside the running event loop. Calls go to the
    endpoint that worked last and move to the next one when it fails. Use ``async with`` or call
    :meth:`close`. Retry semantics of the writes: see :meth:`create` and :meth:`replace`.
    """

    def __init__(self, settings: EtcdSettings) -> None:
        self._settings = settings
        self._endpoints = settings.parsed_endpoints
        self._connections: dict[int, _Connection] = {}
        self._current = 0
        self._closed = False
        self._token: str | None = None
        #: etcd's cluster id from the last read's response header (0 until the first read): names the store
        self.cluster_id = 0
        self._urgent = 0  # urgent listings running (see list_prefix)
        self._calm = asyncio.Event()  # set while none runs
        self._calm.set()
        self._auth_lock = asyncio.Lock()
        self._credentials: grpc.ChannelCredentials | None = None
        if any(ep.secure for ep in self._endpoints):
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=self._read(settings.ca_file, "ca_file"),
                private_key=self._read(settings.key_file, "key_file"),
                certificate_chain=self._read(settings.cert_file, "cert_file"),
            )

    @staticmethod
    def _read(path: object, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            with open(str(path), "rb") as f:
                return f.read()
        except OSError as exc:
            raise ValueError(f"etcd {what} {path}: {exc.strerror}") from exc

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Close every channel; running watches end with :class:`EtcdError`."""
        self._closed = True
        connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            await conn.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _connection(self, index: int) -> _Connection:
        if self._closed:
            raise EtcdError("etcd client is closed")
        conn = self._connections.get(index)
        if conn is None:
            endpoint = self._endpoints[index]
            s = self._settings
            options = [
                ("grpc.initial_reconnect_backoff_ms", int(s.backoff_initial * 1000)),
                ("grpc.min_reconnect_backoff_ms", int(s.backoff_initial * 1000)),
                ("grpc.max_reconnect_backoff_ms", int(s.backoff_max * 1000)),
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                # Notice a peer that vanished without a FIN under a long-lived watch; etcd allows
                # pings every 5 s while a stream is open.
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.enable_retries", 0),
            ]
            if endpoint.secure:
                assert self._credentials is not None
                channel = aio.secure_channel(endpoint.target, self._credentials, options=options)
            else:
                channel = aio.insecure_channel(endpoint.target, options=options)
            conn = self._connections[index] = _Connection(endpoint, channel)
        return conn

    def _failed(self, index: int) -> None:
        """Move on to the next endpoint if ``index`` is still the one in use."""
        if self._current == index and len(self._endpoints) > 1:
            self._current = (index + 1) % len(self._endpoints)
            log.info(
                "etcd endpoint %s failed, switching to %s",
                self._endpoints[index].url,
                self._endpoints[self._current].url,
            )

    def _backoff(self, delay: float) -> float:
        """A jittered delay in [delay/2, delay]."""
        return delay * random.uniform(0.5, 1.0)

    # -- authentication --------------------------------------------------------------------

    async def _metadata(self, deadline: float) -> Metadata:
        s = self._settings
        if s.username is None:
            return ()
        token = self._token
        if token is None:
            async with self._auth_lock:
                if self._token is None:
                    request = rpc_pb2.AuthenticateRequest(name=s.username, password=s.password or "")
                    response = await self._unary(
                        "authenticate",
                        s.username,
                        lambda conn: conn.auth.Authenticate,
                        request,
                        rpc_pb2.AuthenticateResponse,
                        deadline=deadline,
                        authenticated=False,
                    )
                    self._token = str(response.token)
                    log.info("etcd: authenticated as %s", s.username)
                token = self._token
        return (("token", token),)

    def _drop_token(self, metadata: Metadata) -> None:
        """Forget the token we sent (unless another call already replaced it)."""
        if metadata and self._token == metadata[0][1]:
            self._token = None

    # -- the retry loop --------------------------------------------------------------------

    async def _retrying(
        self,
        op: str,
        subject: str,
        attempt: Callable[[_Connection, float, Metadata], Awaitable[R]],
        *,
        deadline: float | None = None,
        authenticated: bool = True,
        attempts: list[BaseException] | None = None,
    ) -> R:
        """Run ``attempt`` until it succeeds, fails for good, or the budget is spent.

        Failed attempts are appended to ``attempts`` so that callers can tell whether an earlier
        attempt may have been applied although it reported an error.
        """
        loop = asyncio.get_running_loop()
        s = self._settings
        if deadline is None:
            deadline = loop.time() + s.budget
        delay = s.backoff_initial
        failures = 0
        token_retried = False
        last: tuple[str, BaseException] | None = None
        while True:
            index = self._current
            conn = self._connection(index)
            url = conn.endpoint.url
            metadata: Metadata = ()
            try:
                if authenticated:
                    metadata = await self._metadata(deadline)
                timeout = max(min(s.call_timeout, deadline - loop.time()), 0.01)
                return await attempt(conn, timeout, metadata)
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED and self._closed:
                    raise EtcdError(f"etcd {op} {subject!r}: client closed", endpoint=url) from exc
                if authenticated and not token_retried and self._is_token_failure(exc):
                    token_retried = True
                    self._drop_token(metadata)
                    log.info(
                        "etcd %s: token rejected by %s (%s); authenticating again", op, url, exc.details()
                    )
                    continue
                if exc.code() not in _RETRYABLE:
                    raise EtcdError(
                        f"etcd {op} {subject!r} on {url}: {_describe(exc)}",
                        endpoint=url,
                        code=exc.code().name,
                    ) from exc
                last = (url, exc)
            except (_Transient, asyncio.InvalidStateError) as exc:
                last = (url, exc)
            except asyncio.CancelledError:
                self._raise_if_closed(op, subject, url)
                raise
            except EtcdUnavailable:
                raise  # authentication already spent the budget
            if attempts is not None:
                attempts.append(last[1])
            failures += 1
            self._failed(index)
            # Try each endpoint once before backing off; back off after each full round.
            pause = self._backoff(delay) if failures % len(self._endpoints) == 0 else 0.0
            if loop.time() + pause >= deadline:
                urls = ", ".join(ep.url for ep in self._endpoints)
                raise EtcdUnavailable(
                    f"etcd {op} {subject!r}: no endpoint answered within {s.budget:g}s ({urls}); "
                    f"{failures} attempts, last error from {last[0]}: {_describe(last[1])}",
                    endpoint=last[0],
                    code=last[1].code().name if isinstance(last[1], aio.AioRpcError) else None,
                ) from last[1]
            if pause:
                await asyncio.sleep(pause)
                delay = min(delay * 2, s.backoff_max)

    async def _unary(
        self,
        op: str,
        subject: str,
        rpc: Callable[[_Connection], Any],
        request: Message,
        returns: type[M],
        *,
        deadline: float | None = None,
        authenticated: bool = True,
        attempts: list[BaseException] | None = None,
    ) -> M:
        """One unary call, ``rpc(connection)(request)``, retried by :meth:`_retrying`; ``returns`` names
        the response type (the generated stubs are untyped). ``authenticated`` False: no token is sent
        (the call that gets one)."""

        async def attempt(conn: _Connection, timeout: float, md: Metadata) -> M:
            response: M = await rpc(conn)(request, timeout=timeout, metadata=md)
            return response

        return await self._retrying(
            op, subject, attempt, deadline=deadline, authenticated=authenticated, attempts=attempts
        )

    def _raise_if_closed(self, op: str, subject: str, url: str) -> None:
        """grpc cancels the calls of a closed channel; report that as the client being closed,
        unless our own task is the one being cancelled."""
        task = asyncio.current_task()
        if self._closed and (task is None or not task.cancelling()):
            raise EtcdError(f"etcd {op} {subject!r}: client closed", endpoint=url) from None

    def _is_token_failure(self, exc: aio.AioRpcError) -> bool:
        if self._settings.username is None:
            return False
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED or _is_token_error(exc.details() or "")

    # -- KV --------------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[KeyValue | None, int]:
        """The key (or None) and the store revision of the read."""
        request = rpc_pb2.RangeRequest(key=_key_bytes(key))
        response = await self._unary("get", key, lambda conn: conn.kv.Range, request, rpc_pb2.RangeResponse)
        self.cluster_id = response.header.cluster_id
        kv = _kv(response.kvs[0]) if response.kvs else None
        return kv, response.header.revision

    async def range_page(
        self, start: bytes, end: bytes, limit: int, revision: int = 0
    ) -> tuple[list[KeyValue], bool, int]:
        """Up to ``limit`` keys of ``[start, end)``, sorted by key, at ``revision`` (0: now): the keys, whether
        more follow, and the revision read. A compacted ``revision`` is an EtcdError with code OUT_OF_RANGE."""
        request = rpc_pb2.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)
        response = await self._unary(
            "range",
            start.decode(errors="replace"),
            lambda conn: conn.kv.Range,
            request,
            rpc_pb2.RangeResponse,
        )
        self.cluster_id = response.header.cluster_id
        return [_kv(pb) for pb in response.kvs], bool(response.more), revision or response.header.revision

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, sorted by key, read in pages at one revision; and that revision."""
        return await self.list_prefix(prefix, _as_is)

    async def list_prefix(
        self,
        prefix: str,
        convert: Callable[[KeyValue], R | None],
        restarted: Callable[[], None] | None = None,
        after: str | None = None,
        urgent: bool = False,
    ) -> tuple[list[R], int]:
        """:meth:`get_prefix` with each key converted as its page arrives (None: left out), so that the
        whole listing is never held at once; and the revision. ``restarted`` is called when the listing
        starts over from the first key (``convert`` then sees every key again, at a newer revision).
        ``after``: only the keys under ``prefix`` that sort after this one. ``urgent``: this client's other
        listings stop converting until it is done (the listing a caller waits for, before one that
        streams in the background)."""
        end = prefix_range_end(_key_bytes(prefix))
        start = _key_bytes(prefix) if after is None else _key_bytes(after) + b"\x00"
        for _ in range(5):
            try:
                return await self._list(prefix, start, end, convert, urgent=urgent)
            except EtcdError as exc:
                # Our pinned revision was compacted between two pages: list again from now.
                if exc.code != grpc.StatusCode.OUT_OF_RANGE.name:
                    raise
                log.info("etcd: listing %s raced a compaction (%s); listing again", prefix, exc)
                if restarted is not None:
                    restarted()
        raise EtcdError(f"etcd get_prefix {prefix!r}: compacted five times while paging")

    async def get_prefix_at(self, prefix: str, revision: int) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` as it was at ``revision`` (a read of the past).

        Raises :class:`WatchCompacted` when etcd has compacted that revision away.
        """
        return await self.list_prefix_at(prefix, revision, _as_is)

    async def list_prefix_at(
        self, prefix: str, revision: int, convert: Callable[[KeyValue], R | None]
    ) -> tuple[list[R], int]:
        """:meth:`get_prefix_at` with each key converted as its page arrives (see :meth:`list_prefix`)."""
        start = _key_bytes(prefix)
        try:
            return await self._list(prefix, start, prefix_range_end(start), convert, revision)
        except EtcdError as exc:
            if exc.code != grpc.StatusCode.OUT_OF_RANGE.name:
                raise
            raise WatchCompacted(
                f"etcd get_prefix {prefix!r} at revision {revision}: compacted ({exc})",
                compact_revision=revision,
            ) from exc

    async def _list(
        self,
        prefix: str,
        start: bytes,
        end: bytes,
        convert: Callable[[KeyValue], R | None],
        revision: int = 0,
        *,
        urgent: bool = False,
    ) -> tuple[list[R], int]:
        if not urgent:
            return await self._list_pages(prefix, start, end, convert, revision, urgent=False)
        self._urgent += 1
        self._calm.clear()
        try:
            return await self._list_pages(prefix, start, end, convert, revision, urgent=True)
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._calm.set()

    async def _list_pages(
        self,
        prefix: str,
        start: bytes,
        end: bytes,
        convert: Callable[[KeyValue], R | None],
        revision: int,
        *,
        urgent: bool,
    ) -> tuple[list[R], int]:
        def page(start: bytes, revision: int) -> Awaitable[rpc_pb2.RangeResponse]:
            request = rpc_pb2.RangeRequest(key=start, range_end=end, limit=PAGE_SIZE, revision=revision)
            return self._unary(
                "get_prefix", prefix, lambda conn: conn.kv.Range, request, rpc_pb2.RangeResponse
            )

        kvs: list[R] = []
        response = await page(start, revision)
        if revision == 0:
            revision = response.header.revision  # every later page is read at the first one's revision
        while True:
            self.cluster_id = response.header.cluster_id
            # the next page is asked for before this one is converted: etcd reads it meanwhile
            following = (
                asyncio.ensure_future(page(response.kvs[-1].key + b"\x00", revision))
                if response.more and response.kvs
                else None
            )
            try:
                for number, pb in enumerate(response.kvs, 1):
                    item = convert(_kv(pb))
                    if item is not None:
                        kvs.append(item)
                    if number % CONVERT_SLICE == 0:
                        await asyncio.sleep(0)
                        if self._urgent and not urgent:
                            await self._calm.wait()
            except BaseException:
                if following is not None:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                raise
            if following is None:
                return kvs, revision
            response = await following
            if self._urgent and not urgent:
                await self._calm.wait()

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write the key; return the revision of the write. Retried like every call: a put
        that timed out may have been applied and is then applied once more."""
        request = rpc_pb2.PutRequest(key=_key_bytes(key), value=value, lease=lease)
        response = await self._unary("put", key, lambda conn: conn.kv.Put, request, rpc_pb2.PutResponse)
        return int(response.header.revision)

    async def delete(self, key: str) -> int:
        """Delete the key (absent is fine); return the revision after the call."""
        request = rpc_pb2.DeleteRangeRequest(key=_key_bytes(key))
        response = await self._unary(
            "delete", key, lambda conn: conn.kv.DeleteRange, request, rpc_pb2.DeleteRangeResponse
        )
        return int(response.header.revision)

    async def write_many(self, puts: Sequence[tuple[str, bytes, int]], deletes: Sequence[str]) -> int:
        """Put ``(key, value, lease)`` and delete ``deletes`` in one transaction (one revision); return
        it. For writers of many keys at once (the benchmarks' churn), not used by the lease service."""
        ops = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=_key_bytes(k), value=v, lease=lease))
            for k, v, lease in puts
        ]
        ops += [
            rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=_key_bytes(k)))
            for k in deletes
        ]
        subject = f"{len(puts)} puts and {len(deletes)} deletes"
        request = rpc_pb2.TxnRequest(success=ops)
        response = await self._unary("txn", subject, lambda conn: conn.kv.Txn, request, rpc_pb2.TxnResponse)
        return int(response.header.revision)

    async def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        """Write the key only if it does not exist; True if this call created it.

        When an attempt failed without an answer (timeout, connection lost) and a retry then finds
        the key existing, the first attempt may have been ours: the key is read back and the call
        reports True if it holds exactly ``value`` and ``lease``. Callers that need certainty with
        ``lease=0`` and a value others might write too should re-read.
        """
        k = _key_bytes(key)
        compare = rpc_pb2.Compare(
            result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE, key=k, create_revision=0
        )
        return await self._put_if("create", key, compare, value, lease)

    async def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        """Write the key only if its mod_revision is still ``mod_revision``; True if written.

        Retries after an unanswered attempt are resolved like :meth:`create`'s: True if the key
        now holds exactly ``value`` and ``lease``.
        """
        k = _key_bytes(key)
        compare = rpc_pb2.Compare(
            result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.MOD, key=k, mod_revision=mod_revision
        )
        return await self._put_if("replace", key, compare, value, lease)

    async def _put_if(self, op: str, key: str, compare: rpc_pb2.Compare, value: bytes, lease: int) -> bool:
        put = rpc_pb2.PutRequest(key=_key_bytes(key), value=value, lease=lease)
        request = rpc_pb2.TxnRequest(compare=[compare], success=[rpc_pb2.RequestOp(request_put=put)])
        failed: list[BaseException] = []
        response = await self._unary(
            op, key, lambda conn: conn.kv.Txn, request, rpc_pb2.TxnResponse, attempts=failed
        )
        if response.succeeded:
            return True
        if not any(_may_have_been_applied(exc) for exc in failed):
            return False
        current, _ = await self.get(key)
        ours = current is not None and current.value == value and current.lease == lease
        log.info(
            "etcd %s %s: retried after %s; key %s our value",
            op,
            key,
            _describe(failed[-1]),
            "holds" if ours else "does not hold",
        )
        return ours

    async def compact(self, revision: int) -> None:
        """Compact the history up to ``revision`` (already compacted further is fine)."""
        request = rpc_pb2.CompactionRequest(revision=revision)
        try:
            await self._unary(
                "compact", str(revision), lambda conn: conn.kv.Compact, request, rpc_pb2.CompactionResponse
            )
        except EtcdError as exc:
            if exc.code == grpc.StatusCode.OUT_OF_RANGE.name and "compacted" in str(exc):
                return
            raise

    # -- leases ----------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (etcd raises short TTLs to its minimum); its id."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        response = await self._unary(
            "grant", f"ttl={ttl}", lambda conn: conn.lease.LeaseGrant, request, rpc_pb2.LeaseGrantResponse
        )
        if response.error:
            raise EtcdError(f"etcd grant ttl={ttl}: {response.error}")
        return int(response.ID)

    async def revoke(self, lease_id: int) -> None:
        """Revoke the lease and delete its keys; a lease that is already gone is fine."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._unary(
                "revoke",
                f"lease {lease_id:x}",
                lambda conn: conn.lease.LeaseRevoke,
                request,
                rpc_pb2.LeaseRevokeResponse,
            )
        except EtcdError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND.name:
                return
            raise

    async def keepalive_once(self, lease_id: int) -> int:
        """Renew the lease once; its new TTL, or 0 (or less) if the lease is gone."""

        async def attempt(conn: _Connection, timeout: float, md: Metadata) -> int:
            call = conn.lease.LeaseKeepAlive(timeout=timeout, metadata=md)
            try:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                response = await call.read()
            finally:
                call.cancel()
            if response is aio.EOF:
                raise _Transient("keepalive stream closed without an answer")
            assert isinstance(response, rpc_pb2.LeaseKeepAliveResponse)
            return int(response.TTL)

        return await self._retrying("keepalive", f"lease {lease_id:x}", attempt)

    async def time_to_live(self, lease_id: int) -> int:
        """Seconds the lease has left, -1 if it is gone."""
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id)
        response = await self._unary(
            "time_to_live",
            f"lease {lease_id:x}",
            lambda conn: conn.lease.LeaseTimeToLive,
            request,
            rpc_pb2.LeaseTimeToLiveResponse,
        )
        return int(response.TTL)

    # -- watch -----------------------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int) -> AsyncGenerator[WatchBatch, None]:
        """Every change under ``prefix`` from ``start_revision`` on (0: from now), forever.

        Survives broken streams: reconnects with back-off (any endpoint) and resumes after the last
        delivered revision, so no event is delivered twice or skipped, and a revision's events
        always arrive in one batch. Raises :class:`WatchCompacted` when etcd no longer has the
        history to resume from. Close it with ``aclose()`` or by cancelling its consumer.
        """
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: str, start_revision: int) -> AsyncGenerator[WatchBatch, None]:
        loop = asyncio.get_running_loop()
        s = self._settings
        key = _key_bytes(prefix)
        range_end = prefix_range_end(key)
        next_rev = start_revision  # 0 until the created response of a "from now" watch
        delay = s.backoff_initial
        failures = 0
        denied = 0
        established: float | None = None  # when the current stream was created
        while True:
            index = self._current
            conn = self._connection(index)
            url = conn.endpoint.url
            call: aio.StreamStreamCall | None = None
            metadata: Metadata = ()
            try:
                metadata = await self._metadata(loop.time() + s.budget)
                call = conn.watch.Watch(metadata=metadata)
                create = rpc_pb2.WatchCreateRequest(
                    key=key, range_end=range_end, start_revision=next_rev, progress_notify=True
                )
                await call.write(rpc_pb2.WatchRequest(create_request=create))
                async with asyncio.timeout(s.call_timeout):
                    created = await call.read()
                response = created
                while True:
                    if response is aio.EOF:
                        raise _Transient("watch stream closed by the server")
                    assert isinstance(response, rpc_pb2.WatchResponse)
                    if response.compact_revision:
                        raise WatchCompacted(
                            f"etcd watch {prefix!r} on {url}: revision {next_rev} is compacted "
                            f"(compacted up to {response.compact_revision}); list again",
                            compact_revision=int(response.compact_revision),
                            endpoint=url,
                        )
                    if response.canceled:
                        reason = response.cancel_reason or "no reason given"
                        if (
                            s.username is not None
                            and denied == 0
                            and ("permission denied" in reason or _is_token_error(reason))
                        ):
                            denied += 1  # probably an expired or lost token: one more try with a new one
                            self._drop_token(metadata)
                            raise _Transient(f"watch refused ({reason}); authenticating again")
                        raise EtcdError(f"etcd watch {prefix!r} on {url} canceled: {reason}", endpoint=url)
                    if response.created:
                        if next_rev == 0:
                            next_rev = response.header.revision + 1
                        if failures:
                            log.info(
                                "etcd watch %s: resumed on %s from revision %d after %d failures",
                                prefix,
                                url,
                                next_rev,
                                failures,
                            )
                        failures, denied, established = 0, 0, loop.time()
                    else:  # whole revisions: fragments are never asked for (WatchCreateRequest.fragment)
                        fresh = [e for e in response.events if e.kv.mod_revision >= next_rev]
                        if fresh:
                            last = fresh[-1].kv.mod_revision
                            next_rev = last + 1
                            yield WatchBatch(
                                events=tuple(_event(e) for e in fresh), revision=last, progress=False
                            )
                        elif not response.events and response.header.revision >= next_rev - 1:
                            # A progress notification: nothing of ours up to the header revision.
                            revision = response.header.revision
                            next_rev = revision + 1
                            yield WatchBatch(events=(), revision=revision, progress=True)
                    response = await call.read()
            except asyncio.CancelledError:
                self._raise_if_closed("watch", prefix, url)
                raise
            except (
                aio.AioRpcError,
                asyncio.InvalidStateError,
                _Transient,
                TimeoutError,
                EtcdUnavailable,
            ) as exc:
                if self._closed:
                    raise EtcdError(f"etcd watch {prefix!r}: client closed", endpoint=url) from exc
                failures += 1
                self._failed(index)
                # Start the back-off afresh only after a stream that lived a while, so a server
                # that accepts watches and drops them at once is not hammered.
                if established is not None and loop.time() - established > s.backoff_max:
                    delay = s.backoff_initial
                established = None
                pause = self._backoff(delay)
                delay = min(delay * 2, s.backoff_max)
                log.warning(
                    "etcd watch %s on %s broken (%s); resuming from revision %s in %.1fs",
                    prefix,
                    url,
                    _describe(exc),
                    next_rev or "now",
                    pause,
                )
                await asyncio.sleep(pause)
            finally:
                if call is not None:
                    call.cancel()
