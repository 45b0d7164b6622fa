"""The contract: generated stubs are current, and the services are what the README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from proto.flannel.v1 import backend_pb2, lease_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_a_fresh_generation() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_lease_service_offers_the_documented_methods() -> None:
    methods = set(lease_pb2.DESCRIPTOR.services_by_name["LeaseService"].methods_by_name)
    assert {"GetNetworkConfig", "AcquireLease", "WatchLeases", "WatchLease", "Describe"} <= methods


def test_backend_service_offers_get_status() -> None:
    assert "GetStatus" in backend_pb2.DESCRIPTOR.services_by_name["BackendService"].methods_by_name


def test_watch_leases_streams_from_the_server() -> None:
    method = lease_pb2.DESCRIPTOR.services_by_name["LeaseService"].methods_by_name["WatchLeases"]
    assert method.server_streaming and not method.client_streaming
