"""``--metrics-listen HOST:PORT``: Prometheus ``/metrics`` of either daemon, from prometheus_client's default
registry.

A daemon's own counters, gauges and histograms (:class:`Counter`, :class:`Gauge`, :class:`Histogram`) are
plain numbers until the flag asks for them: prometheus_client (3.8 MB of RSS and ~40 ms of start-up with the
http and email modules it loads) is imported only by :func:`serve_metrics`, which registers one collector
that reads them at each scrape.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

_DEFINED: list[Counter | Gauge | Histogram] = []


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


class Histogram:
    """Observations counted into buckets (upper bounds, ascending), with their sum; exposed as
    ``<name>_bucket{le=...}`` (cumulative, ``+Inf`` last), ``<name>_sum`` and ``<name>_count``."""

    __slots__ = ("bounds", "counts", "documentation", "name", "sum")

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        _DEFINED.append(self)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the seconds the ``with`` block took."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start)


class _Collector:
    """prometheus_client's view of the :class:`Counter`, :class:`Gauge` and :class:`Histogram` values."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for metric in _DEFINED:
            if isinstance(metric, Histogram):
                total, buckets = 0, []
                for bound, count in zip((*metric.bounds, float("inf")), metric.counts, strict=True):
                    total += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(total)))
                yield HistogramMetricFamily(
                    metric.name, metric.documentation, buckets=buckets, sum_value=metric.sum
                )
                continue
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
