"""tools/demo answers --help at once: before installing anything or importing the project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_help_imports_nothing_heavy_and_names_its_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "tools" / "demo"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    for option in ("--down", "--nodes", "--backend", "--ip-masq", "--no-flanneld"):
        assert option in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}
    assert not imported & {
        "grpc",
        "flannel_testkit",
        "lease_service",
        "backend_service",
        "pyroute2",
        "kubernetes",
    }


def test_demo_refuses_a_bad_node_count_before_doing_anything() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo"), "--nodes", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "--nodes must be between 1 and 200" in proc.stderr
