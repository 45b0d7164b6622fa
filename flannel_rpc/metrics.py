"""``--metrics-listen HOST:PORT``: Prometheus ``/metrics`` of either daemon, from prometheus_client's default
registry.

A daemon's own counters and gauges (:class:`Counter`, :class:`Gauge`) are plain numbers until the flag asks
for them: prometheus_client (3.8 MB of RSS when imported) is loaded only by :func:`serve_metrics`, which
registers one collector that reads them at each scrape. A daemon may also define prometheus_client metrics
itself (the backend's histogram); they live in the same default registry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

_DEFINED: list[Counter | Gauge] = []


class Counter:
    """A number that only goes up; exposed as ``<name>_total``."""

    __slots__ = ("documentation", "name", "value")

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation, self.value = name, documentation, 0.0
        _DEFINED.append(self)

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class Gauge:
    """A number that goes up and down."""

    __slots__ = ("documentation", "name", "value")

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation, self.value = name, documentation, 0.0
        _DEFINED.append(self)

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class _Collector:
    """prometheus_client's view of the :class:`Counter` and :class:`Gauge` values."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        for metric in _DEFINED:
            kind = CounterMetricFamily if isinstance(metric, Counter) else GaugeMetricFamily
            yield kind(metric.name, metric.documentation, value=metric.value)


_registered = False


def serve_metrics(listen: tuple[str, int] | None, log: logging.Logger) -> bool:
    """Serve ``/metrics`` on ``listen`` from a daemon thread (None: not at all, and prometheus_client is never
    imported). False, logged to ``log`` naming the flag, when the address cannot be bound; the bound port
    (``listen`` may say port 0) is logged."""
    global _registered
    if listen is None:
        return True
    from prometheus_client import REGISTRY, start_http_server

    if not _registered:
        REGISTRY.register(_Collector())
        _registered = True
    host, port = listen
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        log.error("cannot serve metrics on --metrics-listen %s:%d: %s", host, port, exc)
        return False
    log.info("serving Prometheus metrics on http://%s:%d/metrics", host, int(server.server_address[1]))
    return True
