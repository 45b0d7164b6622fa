"""The lease service's own HTTP calls to the Kubernetes API, against the test API server (real etcd):
lists in consistent pages, watch lines, error answers, and heartbeats recognised without a lease."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from flannel_testkit.etcd import EtcdServer
from flannel_testkit.kubeapi import KubeApiControl, make_node, running
from flannel_testkit.wait import wait_until
from lease_service.netconfig import parse_network_config
from lease_service.subnet import kube_api
from lease_service.subnet.kube import KubeSubnetManager
from lease_service.subnet.kube_api import (
    EVENT_DECODER,
    ApiStatus,
    FrameTooLarge,
    HttpError,
    KubeApi,
    _WatchParser,
    view_of,
)
from lease_service.subnet.kube_config import KubeConnection

P = "flannel.alpha.coreos.com/"
CONFIG = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')


@pytest.fixture
def api(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[KubeApiControl]:
    with running(etcd.endpoint, prefix, log_path=tmp_path / "apiserver.log") as server:
        yield server.control


def managed(name: str, cidr: str) -> dict[str, object]:
    return make_node(
        name,
        cidr,
        annotations={
            P + "kube-subnet-manager": "true",
            P + "backend-type": "vxlan",
            P + "public-ip": "192.168.70.9",
            P + "backend-data": '{"VNI":1}',
        },
    )


async def test_a_list_comes_in_pages_all_at_the_first_pages_version(api: KubeApiControl) -> None:
    for i in range(5):
        api.create_node(make_node(f"n{i}", f"10.244.{i}.0/24"))
    client = KubeApi(KubeConnection(api.url))
    try:
        pages = []
        async for page in client.list_nodes(page_size=2):
            pages.append(page)
            if len(pages) == 1:
                api.create_node(make_node("late", "10.244.9.0/24"))  # after the list's version: not in it
        assert [len(p.items) for p in pages] == [2, 2, 1]
        assert sorted(n.metadata.name for p in pages for n in p.items) == [f"n{i}" for i in range(5)]
        assert len({p.metadata.resourceVersion for p in pages}) == 1
        assert pages[0].items[0].spec.podCIDR == "10.244.0.0/24" and pages[0].items[0].metadata.uid
    finally:
        await client.close()


async def test_the_next_page_is_asked_for_before_a_page_is_handed_on(api: KubeApiControl) -> None:
    for i in range(5):
        api.create_node(make_node(f"n{i}", f"10.244.{i}.0/24"))
    api.clear_requests()
    client = KubeApi(KubeConnection(api.url))
    try:
        async with contextlib.aclosing(client.list_nodes(page_size=2)) as pages:
            first = await anext(pages)

            def asked() -> list[str]:
                requests = [r for r in api.requests() if r["path"] == "/api/v1/nodes"]
                return [parse_qs(r["query"]).get("continue", [""])[0] for r in requests]

            # asked for while this page is held (the server logs a request as it starts answering it)
            wait_until(lambda: len(asked()) == 2, 10, what="the second page's request")
            assert asked() == ["", first.metadata.continue_]
        # stopped after one page: the request for the next is not left running
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "list-nodes-page" and not t.done()]
    finally:
        await client.close()


async def test_a_list_continued_after_a_compaction_is_410_expired(api: KubeApiControl) -> None:
    for i in range(3):
        api.create_node(make_node(f"n{i}", f"10.244.{i}.0/24"))
    client = KubeApi(KubeConnection(api.url))
    try:
        first = kube_api.LIST_DECODER.decode(
            await client.request("GET", "/api/v1/nodes", query={"limit": "2"})
        )
        assert len(first.items) == 2 and first.metadata.continue_
        api.compact()  # the list's revision is gone: its next page cannot be read consistently
        with pytest.raises(ApiStatus) as err:
            await client.request(
                "GET", "/api/v1/nodes", query={"limit": "2", "continue": first.metadata.continue_}
            )
        assert err.value.status == 410 and "too old" in err.value.message
        with pytest.raises(ApiStatus) as err:
            await client.request("GET", "/api/v1/nodes", query={"limit": "2", "continue": "bm90IGEgdG9rZW4"})
        assert err.value.status == 400
    finally:
        await client.close()


async def test_an_error_answer_names_the_status_and_message(api: KubeApiControl) -> None:
    client = KubeApi(KubeConnection(api.url))
    try:
        with pytest.raises(ApiStatus) as err:
            await client.get_node("missing")
        assert err.value.status == 404 and "missing" in err.value.message
        api.deny("list", "nodes")
        with pytest.raises(ApiStatus) as err:
            await anext(client.list_nodes())
        assert err.value.status == 403
    finally:
        await client.close()


async def test_the_watch_yields_one_line_per_event_and_heartbeats_change_no_lease(
    api: KubeApiControl,
) -> None:
    api.create_node(managed("n1", "10.244.1.0/24"))
    client = KubeApi(KubeConnection(api.url))
    manager = KubeSubnetManager(client, "n1")
    try:
        first = view_of(api.get_node("n1"))
        assert manager._changed(CONFIG, first) is not None  # a new node: its lease
        version = int(first.metadata.resourceVersion)
        api.patch_node(
            "n1",
            {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "beat"}]}},
            status=True,
        )
        api.patch_node("n1", {"metadata": {"annotations": {P + "public-ip": "192.168.70.10"}}}, status=True)
        events = []

        def on_line(line: bytes | bytearray) -> None:
            event = EVENT_DECODER.decode(line)
            if event.type != "BOOKMARK":
                events.append(event)
            if len(events) == 2:
                raise Seen

        with pytest.raises(Seen):
            await client.watch_nodes(version, timeout_seconds=5, on_line=on_line)
        heartbeat, change = (manager._changed(CONFIG, e.object.node()) for e in events)
        assert heartbeat is None
        assert (
            change is not None and change[1] is not None and str(change[1].attrs.public_ip) == "192.168.70.10"
        )
    finally:
        await client.close()


class Seen(Exception):
    """Raised by a test's line callback to end the watch once it has what it waited for."""


# ---- the watch answer's parser, fed byte by byte as a socket could deliver it -------------------------


EVENTS = [b'{"type":"ADDED","object":{"metadata":{"name":"n%d"}}}' % i for i in range(3)]


def chunked(body: bytes, cuts: list[int]) -> bytes:
    """``body`` as chunks cut at ``cuts``, the last chunk, a trailer and the end."""
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-Trailer: 1\r\n\r\n"


def feed(answer: bytes, step: int, close: bool = False) -> tuple[list[bytes | bytearray], Exception | None]:
    """Feed ``answer`` ``step`` bytes at a time (then the close, if asked): the lines and the outcome."""
    lines: list[bytes | bytearray] = []
    parser = _WatchParser(lines.append)
    try:
        for i in range(0, len(answer), step):
            if parser.feed(answer[i : i + step]):
                return lines, None
        assert close, "the answer should have ended"
        parser.closed()
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        return lines, exc
    return lines, None


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1 << 20])
def test_a_watch_answer_cut_anywhere_gives_each_line_once(step: int) -> None:
    body = EVENTS[0] + b"\n" + EVENTS[1] + b"\n\n" + EVENTS[2]  # the last line without its newline
    for cuts in ([], [5], [len(EVENTS[0]), len(EVENTS[0]) + 1], [3, 40, 90, 100]):
        assert feed(chunked(body, cuts), step) == (EVENTS, None)


@pytest.mark.parametrize("step", [1, 5, 1 << 20])
def test_a_watch_answer_with_a_length_or_ended_by_the_close_gives_its_lines(step: int) -> None:
    body = b"\n".join(EVENTS) + b"\n"
    with_length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert feed(with_length, step) == (EVENTS, None)
    until_close = b"HTTP/1.1 200 OK\nConnection: close\n\n" + body[:-1]
    assert feed(until_close, step, close=True) == (EVENTS, None)


def test_a_watch_error_answer_is_its_status_and_message() -> None:
    status = b'{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 5"}'
    lines, error = feed(chunked(status, [10]).replace(b"200 OK", b"410 Gone"), 3)
    assert lines == [] and isinstance(error, ApiStatus)
    assert error.status == 410 and error.message == "too old resource version: 5"


@pytest.mark.parametrize(
    ("answer", "close", "expected"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", False, "not an HTTP/1.1 answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", False, "without a colon"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, "a bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", False, "a bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, False, "longer than"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", False, "more than 100 headers"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{}", True, "mid-answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", True, "mid-answer"),
        (b"HTTP/1.1 200", True, "closed the connection"),
    ],
)
def test_a_broken_watch_answer_is_a_named_http_error(answer: bytes, close: bool, expected: str) -> None:
    lines, error = feed(answer, 4096, close=close)
    assert lines == [] and isinstance(error, HttpError) and expected in str(error)


def test_a_watch_line_beyond_the_frame_limit_ends_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_api, "MAX_FRAME", 100)
    lines, error = feed(chunked(EVENTS[0] + b"\n" + b"x" * 200, [70, 150]), 50)
    assert lines == [EVENTS[0]] and isinstance(error, FrameTooLarge)


def test_what_the_line_callback_raises_ends_the_parse_with_it() -> None:
    def refuse(line: bytes | bytearray) -> None:
        raise ValueError(f"unusable: {line[:5]!r}")

    with pytest.raises(ValueError, match="unusable"):
        _WatchParser(refuse).feed(chunked(b"\n".join(EVENTS) + b"\n", []))


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=api"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "k.pem")]
        + ["-out", str(tmp_path / "c.pem")],
        check=True,
        capture_output=True,
    )
    return tmp_path / "c.pem", tmp_path / "k.pem"


async def test_a_watch_over_tls_verifies_the_server_and_sends_the_token(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(chunked(b"\n".join(EVENTS) + b"\n", [30]))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    ca = cert.read_text()
    client = KubeApi(KubeConnection(f"https://127.0.0.1:{port}", ca_pem=ca, token="t0ken"))
    try:
        lines: list[bytes | bytearray] = []
        await client.watch_nodes(7, timeout_seconds=5, on_line=lines.append)
        assert lines == EVENTS
        assert heads[0].startswith(b"GET /api/v1/nodes?watch=1&resourceVersion=7&")
        assert b"\r\nAuthorization: Bearer t0ken\r\n" in heads[0]
        untrusted = KubeApi(KubeConnection(f"https://127.0.0.1:{port}"))  # the system's CAs: refused
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.watch_nodes(7, timeout_seconds=5, on_line=lines.append)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
