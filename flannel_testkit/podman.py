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

SYSTEMD_RUN_FLAGS = (*RUN_FLAGS, "--systemd=always", "--cap-add", "NET_ADMIN,NET_RAW,SYS_ADMIN")
"""A container that boots systemd as PID 1 (``/sbin/init``) and runs flanneld.service as on a node:

* ``--systemd=always``: podman mounts /run, /tmp and the cgroup hierarchy (this host's hybrid v1 layout
  included, with runc) as systemd wants them and stops it with SIGRTMIN+3; no ``--privileged`` and the
  default cgroup namespace suffice;
* ``NET_ADMIN``, ``NET_RAW``: the bounding set the unit hands to the backend (podman's default set lacks
  both, and flanneld refuses to start without them);
* ``SYS_ADMIN``: for systemd to build the unit's sandbox (ProtectSystem=, PrivateTmp=, ProtectHome=, ...:
  a mount namespace per service). Without it systemd 252 runs the service unsandboxed, silently for the
  mount options, so the unit would pass here and fail on a real node.

/proc/sys stays read-only (podman's default): nothing inside can change the host's kernel settings.
"""


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
