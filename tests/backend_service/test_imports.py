"""The backend loads prometheus_client only when it serves metrics (and its histogram is exposed exactly as
prometheus_client's own Histogram would be), and of pyroute2 only the rtnetlink parts it uses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Histogram as ClientHistogram
from prometheus_client.metrics_core import Metric

from flannel_rpc import metrics

PROBE = """
import sys
from backend_service import cli
cli.parse(sys.argv[1:])
import backend_service.daemon
print(" ".join(m for m in ("prometheus_client",) if sys.modules.get(m) is not None))
"""


@pytest.mark.parametrize(("args", "loaded"), [([], ""), (["--metrics-listen", "127.0.0.1:9102"], "")])
def test_prometheus_client_is_not_loaded_before_metrics_are_served(args: list[str], loaded: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == loaded


PYROUTE2 = """
import sys
import backend_service.daemon
print(sorted({m.split(".")[1] for m in sys.modules if m.startswith("pyroute2.")} & {"ipdb", "ndb", "conntrack"}))
from pyroute2 import IPRoute, NDB  # the package's own names: the whole package, on demand
print(IPRoute.__module__, NDB.__module__)
"""


def test_only_pyroute2s_rtnetlink_parts_are_loaded_and_the_rest_on_demand() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PYROUTE2], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.splitlines() == ["[]", "pyroute2.iproute.linux pyroute2.ndb.main"]


def test_a_histogram_is_exposed_as_prometheus_clients_own() -> None:
    buckets = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
    theirs = CollectorRegistry()
    reference = ClientHistogram("fsy_seconds", "Seconds.", buckets=buckets, registry=theirs)
    ours = metrics.Histogram("fsy_seconds", "Seconds.", buckets)
    try:
        for value in (0.0005, 0.001, 0.02, 0.3, 1, 7, 99):
            reference.observe(value)
            ours.observe(value)
        registry = CollectorRegistry()
        registry.register(_Named("fsy_seconds"))
        expected = [line for line in generate_latest(theirs).decode().splitlines() if "_created" not in line]
        assert generate_latest(registry).decode().splitlines() == expected
        with ours.time():
            pass
        assert sum(ours.counts) == 8  # the block, observed once
    finally:
        metrics._DEFINED.remove(ours)


class _Named:
    """The process's collector, reduced to one metric family."""

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> Iterator[Metric]:
        return (family for family in metrics._Collector().collect() if family.name == self.name)


UNITTEST = """
import sys
import backend_service.daemon
print(sorted(m for m in sys.modules if m.split(".")[0] == "unittest"))
from pyroute2.netlink.rtnl import iprsocket
queue = iprsocket.NotLocal.msg_queue  # what pyroute2 built with unittest.mock.Mock(): takes anything
print(queue.put_nowait(0, b"") is queue.any.attribute)
from unittest import mock  # the real one, for whoever asks afterwards
print(mock.Mock.__module__, mock.Mock().assert_not_called())
"""


def test_unittest_is_not_loaded_for_pyroute2_and_loads_for_whoever_imports_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", UNITTEST], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.splitlines() == ["[]", "True", "unittest.mock None"]


NO_SSL = """
import sys
from backend_service.__main__ import _ssl_kept_out
with _ssl_kept_out():  # as the backend's main loads asyncio
    import asyncio
import backend_service.daemon
from backend_service.vxlan import device
from backend_service.wgkey import Key
device.vtep_mac(1, __import__("ipaddress").ip_address("192.168.77.2")), Key.generate()
print(sorted(m for m in ("ssl", "_ssl", "hashlib", "_hashlib", "secrets") if m in sys.modules))
import ssl  # whoever needs it afterwards (prometheus_client) gets the real one
from pyroute2.netlink.rtnl import probe_msg
print(ssl.SSLContext.__name__, probe_msg.ssl is not ssl)
"""


def test_the_backend_loads_neither_ssl_nor_openssls_hashes_and_ssl_loads_for_whoever_imports_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_SSL], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.splitlines() == ["[]", "SSLContext True"]
