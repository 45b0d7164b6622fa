"""Debian's package mirror, reachable from a container in a test's network namespace without giving that
namespace any route out.

``MirrorForwarder`` listens on ``127.0.0.1:80`` *inside* the namespace (the socket is made by a thread that
entered it with ``setns(2)``, :func:`flannel_testkit.netns.in_netns`); the container names the mirror's
hosts ``127.0.0.1`` (``podman run --add-host deb.debian.org:127.0.0.1``), so its apt, with the sources
list it came with, talks to the forwarder. Each connection's first request names its ``Host``; a host on
the allow list is connected to, port 80, from the test process's own namespace (as the host's own apt
does), and bytes are copied both ways until either side closes; any other host gets ``403`` and nothing
is connected. Nothing is added to the host's network: no device, route or rule.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Callable, Iterable
from typing import Self

from flannel_testkit.netns import in_netns

DEBIAN_HOSTS = ("deb.debian.org", "security.debian.org")
PROBE_URL = "http://deb.debian.org/debian/dists/bookworm/InRelease"
_HEADER_LIMIT = 64 * 1024


def mirror_unreachable(url: str = PROBE_URL, timeout: float = 10.0) -> str | None:
    """Why this machine cannot reach Debian's mirror (a HEAD of ``url``), or None when it can."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as reply:
            status = reply.status
    except OSError as exc:
        return f"HEAD {url}: {exc}"
    return None if status == 200 else f"HEAD {url}: HTTP {status}"


def _request_host(head: bytes) -> str | None:
    """The ``Host`` header's name (without a port) of a request's head, or None."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            return value.strip().decode("ascii", "replace").rsplit(":", 1)[0].lower()
    return None


class MirrorForwarder:
    """A forwarder for ``hosts`` on ``127.0.0.1:port`` inside network namespace ``ns``; a context manager
    whose exit closes the listener and every connection and joins every thread it started."""

    def __init__(self, ns: str, hosts: Iterable[str] = DEBIAN_HOSTS, port: int = 80) -> None:
        self.ns = ns
        self.hosts = frozenset(h.lower() for h in hosts)
        self.port = port
        self.refused: list[str] = []
        """Hosts asked for that are not on the allow list (each answered 403)."""
        self.forwarded = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self._listener: socket.socket | None = None

    def __enter__(self) -> Self:
        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(32)
            return s

        self._listener = in_netns(self.ns, listen)
        self._start(self._accept, "mirror-accept")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._shutdown(self._listener)  # wakes the accept() blocked in its thread
            self._listener.close()
        with self._lock:
            for s in list(self._sockets):
                self._shutdown(s)
        for thread in list(self._threads):
            thread.join(timeout=10)

    def _start(self, target: Callable[..., None], name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    @staticmethod
    def _shutdown(s: socket.socket) -> None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            self._start(self._serve, "mirror-conn", client)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            client.settimeout(60)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < _HEADER_LIMIT:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            host = _request_host(head)
            if host not in self.hosts:
                with self._lock:
                    self.refused.append(str(host))
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            upstream = socket.create_connection((host, 80), timeout=30)
            self._track(upstream)
            with self._lock:
                self.forwarded += 1
            upstream.sendall(head)
            down = self._start(self._pump, "mirror-down", upstream, client)
            self._pump(client, upstream)
            down.join(timeout=60)  # the answers still on their way to a client that stopped asking
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    self._shutdown(s)
                    s.close()
                    with self._lock:
                        self._sockets.discard(s)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        """Copy ``source`` to ``sink`` until ``source`` ends; then end ``sink``'s writing side."""
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
