"""``--metrics-listen HOST:PORT``: Prometheus ``/metrics`` of either daemon, from prometheus_client's default
registry (each daemon's own ``metrics`` module defines its metrics there)."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server


def serve_metrics(listen: tuple[str, int] | None, log: logging.Logger) -> bool:
    """Serve ``/metrics`` on ``listen`` from a daemon thread (None: not at all). False, logged to ``log``
    naming the flag, when the address cannot be bound; the bound port (``listen`` may say port 0) is logged."""
    if listen is None:
        return True
    host, port = listen
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        log.error("cannot serve metrics on --metrics-listen %s:%d: %s", host, port, exc)
        return False
    log.info("serving Prometheus metrics on http://%s:%d/metrics", host, int(server.server_address[1]))
    return True
