"""Clients of the test API server for tests: the Node calls and the test controls (``/_test/...``), each
written once (:class:`NodeCalls`) and sent either synchronously (:class:`KubeApiControl`, urllib, no
event loop) or from asyncio (:class:`AsyncKubeApiControl`, aiohttp)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from aiohttp import ClientSession, ClientTimeout

from flannel_testkit.kubeapi.nodes import JSON
from flannel_testkit.kubeapi.patch import STRATEGIC_MERGE_PATCH

R = TypeVar("R")


class KubeApiError(Exception):
    """A non-2xx answer of the API server to a helper call; ``status`` is the Status object."""

    def __init__(self, code: int, status: Any) -> None:
        self.code = code
        self.status = status if isinstance(status, dict) else {"message": str(status)}
        self.reason = self.status.get("reason", "")
        super().__init__(f"{code} {self.reason}: {self.status.get('message', '')}")


@dataclass(frozen=True)
class Call:
    """One request: a body of bytes is sent as it is, anything else as JSON."""

    method: str
    path: str
    body: Any = None
    content_type: str = "application/json"

    @property
    def data(self) -> bytes | None:
        if self.body is None or isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


def decode(raw: bytes) -> Any:
    """An answer's body: its JSON, its text when it is not JSON, None when it is empty."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _node_path(name: str, status: bool) -> str:
    return f"/api/v1/nodes/{name}" + ("/status" if status else "")


def _same(answer: Any) -> Any:
    return answer


class NodeCalls(Generic[R]):
    """Every helper once; ``_send`` delivers the call and hands the decoded answer to ``then``."""

    def _send(self, call: Call, then: Callable[[Any], Any] = _same) -> R:
        raise NotImplementedError

    def list_nodes(self) -> R:
        return self._send(Call("GET", "/api/v1/nodes"))

    def get_node(self, name: str) -> R:
        return self._send(Call("GET", _node_path(name, False)))

    def create_node(self, node: JSON) -> R:
        return self._send(Call("POST", "/api/v1/nodes", node))

    def replace_node(self, node: JSON, *, status: bool = False) -> R:
        return self._send(Call("PUT", _node_path(node["metadata"]["name"], status), node))

    def patch_node(
        self, name: str, patch: Any, *, status: bool = False, content_type: str = STRATEGIC_MERGE_PATCH
    ) -> R:
        return self._send(Call("PATCH", _node_path(name, status), patch, content_type))

    def delete_node(self, name: str) -> R:
        return self._send(Call("DELETE", _node_path(name, False)))

    def drop_watches(self, clean: bool = False) -> R:
        """Abort every open watch (``clean``: end them as ``timeoutSeconds`` does); how many."""
        path = "/_test/drop-watches" + ("?clean=1" if clean else "")
        return self._send(Call("POST", path), lambda answer: int(answer["dropped"]))

    def compact(self) -> R:
        """Compact etcd so that every resourceVersion handed out so far is too old; the revision."""
        return self._send(Call("POST", "/_test/compact"), lambda answer: int(answer["revision"]))

    def deny(self, verb: str, resource: str, code: int = 403) -> R:
        return self._send(Call("POST", "/_test/deny", {"verb": verb, "resource": resource, "code": code}))

    def inject_frame(self, frame: bytes) -> R:
        """Write ``frame`` into every open watch stream; into how many."""
        call = Call("POST", "/_test/inject-frame", frame, "application/octet-stream")
        return self._send(call, lambda answer: int(answer["injected"]))

    def allow_all(self) -> R:
        return self._send(Call("POST", "/_test/allow-all"))

    def requests(self) -> R:
        """Every API request so far (``method``, ``path``, ``query``, ``content_type``, ``body``)."""
        return self._send(Call("GET", "/_test/requests"))

    def clear_requests(self) -> R:
        return self._send(Call("POST", "/_test/clear-requests"))


class KubeApiControl(NodeCalls[Any]):
    """The helpers, synchronous (urllib, no event loop)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _send(self, call: Call, then: Callable[[Any], Any] = _same) -> Any:
        req = urllib.request.Request(
            self.url + call.path,
            data=call.data,
            method=call.method,
            headers={"Content-Type": call.content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return then(decode(resp.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                raise KubeApiError(exc.code, decode(exc.read())) from None


class AsyncKubeApiControl(NodeCalls[Awaitable[Any]]):
    """The helpers from asyncio (``async with AsyncKubeApiControl(url) as api: await api.get_node(...)``)."""

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

    def _send(self, call: Call, then: Callable[[Any], Any] = _same) -> Awaitable[Any]:
        return self._deliver(call, then)

    async def _deliver(self, call: Call, then: Callable[[Any], Any]) -> Any:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=self.timeout))
        headers = {"Content-Type": call.content_type}
        async with self._session.request(
            call.method, self.url + call.path, data=call.data, headers=headers
        ) as resp:
            answer = decode(await resp.read())
            if resp.status >= 300:
                raise KubeApiError(resp.status, answer)
            return then(answer)
