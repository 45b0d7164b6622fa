"""Real containers for tests and the demo: rootful podman (Debian's 4.3, with runc) and images made
without a registry, from a Debian base built locally with mmdebstrap and ``podman import``.

This host's quirks, applied to every ``podman run``: runc (crun refuses the hybrid cgroup layout here)
and explicit rlimits below the hard limits (rootful podman asks for more than this machine allows).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=10000:10000", "--ulimit", "nproc=4096:4096")


def podman_missing() -> str | None:
    """What this machine lacks to run containers (None when nothing)."""
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} (apt-get install podman runc mmdebstrap)"
    return None


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def local_base_image(packages: Sequence[str] = (), suite: str = "bookworm", variant: str = "minbase") -> str:
    """A Debian ``suite`` image with ``packages``, made once with mmdebstrap and ``podman import``, named by
    a hash of its recipe (``localhost/flannel-py-base:<suite>-<hash>``) and reused while it exists."""
    recipe = "\n".join([suite, variant, *sorted(packages)]) + "\n"
    name = f"localhost/flannel-py-base:{suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if image_exists(name):
        return name
    with tempfile.TemporaryDirectory(prefix="flannel-py-base.") as tmp:
        tar = Path(tmp) / "base.tar"
        include = [f"--include={','.join(packages)}"] if packages else []
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                f"--variant={variant}",
                *include,
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                suite,
                str(tar),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        subprocess.run(
            ["podman", "import", "--quiet", "--change", 'CMD ["/bin/bash"]', str(tar), name],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return name
