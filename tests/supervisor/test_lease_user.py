"""The real lease service under flanneld runs as an unprivileged user by default (nobody) with no
capabilities, and the node still works (the backend, as root with two capabilities, reaches its socket)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_testkit.cluster import Cluster, caps
from flannel_testkit.wait import wait_until

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory the unprivileged user can traverse (pytest's tmp dirs are root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="fptlu-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def python_for_anyone(base: Path) -> str:
    """An interpreter 'nobody' can run: a venv of the system Python that reads this checkout and the
    project's installed dependencies (the project venv's interpreter lives under /root, mode 0700)."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("needs a system python3 outside /root")
    venv = base / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    packages = (
        Path(sys.prefix)
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "flannel-py.pth").write_text(f"{packages}\n{ROOT}\n")
    return str(venv / "bin" / "python")


def test_the_lease_service_runs_as_nobody_by_default_and_the_node_works(world_readable_dir: Path) -> None:
    python = python_for_anyone(world_readable_dir)
    args = ["--lease-cmd", shlex.join([python, "-m", "lease_service"])]  # no --lease-user: the default
    with Cluster(world_readable_dir / "cluster", nodes=2, flanneld=True, flanneld_args=args) as cluster:
        one, two = cluster.node(1), cluster.node(2)
        assert cluster.ping(one, two.pod_ip, count=3).received == 3
        assert one.flanneld is not None
        flanneld = one.flanneld
        pid = int(
            wait_until(
                lambda: re.search(r"lease-service started \(pid (\d+)\)", flanneld.log()),
                what="the lease service's pid",
            ).group(1)
        )
        status = Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE)
        assert uids is not None and set(uids.groups()) == {"65534"}, status
        held = caps(pid)
        assert held["CapEff"] == held["CapPrm"] == held["CapBnd"] == "0000000000000000"
        assert held["NoNewPrivs"] == "1"
        assert (one.run_dir / "lease.sock").stat().st_uid == 65534
