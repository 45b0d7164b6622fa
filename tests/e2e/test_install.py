"""A real install: the wheel (runtime dependencies only) and tools/install on a fresh Debian 12 root file
system (mmdebstrap, run under podman, so the host's /opt, /usr/local and /etc are never touched): the venv in
/opt/flannel-py, the console scripts linked into /usr/local/bin, the lease service's user, the settings
file, and the installed systemd unit passing ``systemd-analyze verify``."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import tomllib
import uuid
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from flannel_testkit.kubelet import REPO, TEST_LABEL, host_wheels, podman, remove_labelled
from flannel_testkit.podman import RUN_FLAGS, local_base_image

pytestmark = [pytest.mark.timeout(1800)]

# What a fresh Debian 12 machine has (python3, systemd), plus what tools/install would fetch with apt,
# so that the test needs no package mirror from inside the container.
FRESH_DEBIAN = ("python3", "python3-venv", "systemd", "iptables", "nftables", "iproute2")
SCRIPTS = ("flanneld", "flannel-lease-service", "flannel-backend", "flannelctl")


def normalized(requirement: str) -> str:
    return str(Requirement(requirement))


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def fresh_debian() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root for podman")
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (tools/bootstrap installs it)")
    return local_base_image(FRESH_DEBIAN)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    host_wheels(directory)
    return directory


def test_the_wheel_requires_the_runtime_dependencies_only(wheels: Path) -> None:
    [wheel] = wheels.glob("flannel_py-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    project = pyproject()["project"]
    assert isinstance(project, dict)
    required = [r for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r]
    assert sorted(map(normalized, required)) == sorted(map(normalized, project["dependencies"]))
    assert {name.split("/")[0] for name in names} >= {
        "lease_service",
        "backend_service",
        "supervisor",
        "flannelctl",
        "proto",
        "flannel_rpc",
    }
    assert not [n for n in names if n.startswith(("tests/", "bench/", "tools/"))]


def test_tools_install_on_a_fresh_debian_12(fresh_debian: str, wheels: Path) -> None:
    script = f"""set -eu
        /src/tools/install --find-links /wheels
        echo "== verify"; systemd-analyze verify /etc/systemd/system/flanneld.service && echo verified
        echo "== security"; systemd-analyze security --offline=true /etc/systemd/system/flanneld.service | tail -n 1
        echo "== links"; for s in {" ".join(SCRIPTS)}; do echo "$s -> $(readlink /usr/local/bin/$s)"; done
        echo "== user"; id flannel
        echo "== the lease user runs the lease service"
        setpriv --reuid flannel --regid flannel --clear-groups --inh-caps=-all flannel-lease-service --help >/dev/null
        echo lease-user-ok
        echo "== packages"; /opt/flannel-py/bin/python -m pip list --format=freeze --disable-pip-version-check
        echo "== settings"; cat /etc/default/flanneld
        echo "== again"; echo "FLANNELD_IFACE=eth9" >> /etc/default/flanneld; /src/tools/install --find-links /wheels
        grep -q FLANNELD_IFACE=eth9 /etc/default/flanneld && echo settings-kept
        echo "== uninstall"; /src/tools/install --uninstall
        test ! -e /opt/flannel-py && test ! -e /usr/local/bin/flanneld && test ! -e /etc/systemd/system/flanneld.service
        test -e /etc/default/flanneld && echo uninstalled
    """
    test_id = uuid.uuid4().hex[:6]
    try:
        proc = subprocess.run(
            [
                "podman",
                "run",
                "--rm",
                "--name",
                f"fpt{test_id}-install",
                "--label",
                f"{TEST_LABEL}={test_id}",
                *RUN_FLAGS,
                "--network",
                "none",
                "--volume",
                f"{REPO}:/src:ro",
                "--volume",
                f"{wheels}:/wheels:ro",
                fresh_debian,
                "bash",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        remove_labelled(test_id)
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    section = {
        m.group(1): m.group(2) for m in re.finditer(r"== (\w[\w ]*)\n(.*?)(?=\n== |\Z)", out, re.DOTALL)
    }

    assert section["verify"].strip() == "verified", proc.stderr
    assert re.search(r"Overall exposure level for flanneld.service: \d\.\d", section["security"])
    for s in SCRIPTS:
        assert f"{s} -> /opt/flannel-py/bin/{s}" in section["links"]
    assert "uid=" in section["user"] and "(flannel)" in section["user"]
    assert "lease-user-ok" in section["the lease user runs the lease service"]
    installed = {line.split("==")[0].lower() for line in section["packages"].split()}
    assert "flannel-py" in installed
    assert not installed & {"pytest", "grpcio-tools", "import-linter", "kubernetes-validate", "pytest-xdist"}
    assert "FLANNELD_LEASE_USER=flannel" in section["settings"]
    assert "settings-kept" in section["again"]
    assert "uninstalled" in section["uninstall"]
    assert podman("ps", "--all", "--quiet", "--filter", f"label={TEST_LABEL}={test_id}").stdout.strip() == ""
