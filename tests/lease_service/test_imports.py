"""What the lease service loads for its mode: Python's ssl module only where something uses it (Kubernetes'
HTTPS, prometheus_client), prometheus_client only with --metrics-listen."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from lease_service import cli
from lease_service.__main__ import _without_python_ssl
_without_python_ssl(cli.parse(sys.argv[1:]))
import lease_service.daemon
try:
    import ssl
except ImportError:
    pass
print(" ".join(sorted(m for m in ("ssl", "prometheus_client") if sys.modules.get(m) is not None)))
"""


@pytest.mark.parametrize(
    ("args", "loaded"),
    [
        (["--etcd-endpoints", "https://127.0.0.1:2379"], ""),
        (["--metrics-listen", "127.0.0.1:9101"], "ssl"),  # prometheus_client comes when it serves
        (["--kube-subnet-mgr"], "ssl"),
    ],
)
def test_ssl_and_prometheus_client_are_loaded_only_where_they_are_used(args: list[str], loaded: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == loaded
