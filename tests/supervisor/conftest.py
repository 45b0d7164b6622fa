from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.supervisor.harness import Flanneld


@pytest.fixture
def flanneld(tmp_path: Path) -> Iterator[Callable[..., Flanneld]]:
    """Start a flanneld with fake children: ``flanneld(lease=[switches], backend=[switches], args=[...])``."""
    started: list[Flanneld] = []

    def start(**kwargs: Any) -> Flanneld:
        instance = Flanneld(tmp_path / f"f{len(started)}", **kwargs)
        instance.tmp.mkdir()
        started.append(instance)
        return instance.start()

    try:
        yield start
    finally:
        for instance in started:
            instance.cleanup()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="fpt-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
