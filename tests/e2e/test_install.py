"""A real install: the wheel (runtime dependencies only) and tools/install on a fresh Debian 12 root file
system (mmdebstrap, run under podman, so the host's /opt, /usr/local and /etc are never touched): the venv in
/opt/flannel-py, the console scripts linked into /usr/local/bin, the lease service's user, the settings
file, and the installed systemd unit passing ``systemd-analyze verify``; its apt path on a Debian 12 that
lacks the packages, with Debian's mirror; and ``systemctl start flanneld`` under a real systemd (PID 1 of
the container, in a network namespace of the test's own, with a real etcd there) bringing up the node."""

from __future__ import annotations

import email.parser
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from flannel_testkit.cluster import kill_namespace_processes
from flannel_testkit.debmirror import DEBIAN_HOSTS, MirrorForwarder, mirror_unreachable
from flannel_testkit.etcd import EtcdHttp, EtcdServer
from flannel_testkit.kubelet import REPO, TEST_LABEL, host_wheels, podman, remove_labelled
from flannel_testkit.netns import create_netns, delete_netns, in_netns
from flannel_testkit.podman import RUN_FLAGS, SYSTEMD_RUN_FLAGS, local_base_image, podman_missing
from flannel_testkit.wait import wait_until

pytestmark = [pytest.mark.timeout(1800)]

# What a fresh Debian 12 machine has (python3, systemd as init, dbus), plus what tools/install would fetch
# with apt, so that these tests need no package mirror from inside the container (the apt test has its own).
FRESH_DEBIAN = (
    "python3",
    "python3-venv",
    "systemd",
    "systemd-sysv",
    "dbus",
    "iptables",
    "nftables",
    "iproute2",
)
# A Debian 12 without what tools/install needs but python3: its apt path fills the gap.
BARE_DEBIAN = ("python3",)
APT_PACKAGES = ("python3-venv", "iptables", "nftables", "iproute2")
SCRIPTS = ("flanneld", "flannel-lease-service", "flannel-backend", "flannelctl")


def sections(out: str) -> dict[str, str]:
    """A script's output split at its ``== name`` lines: name -> the lines up to the next one."""
    return {m.group(1): m.group(2) for m in re.finditer(r"== (\w[\w -]*)\n(.*?)(?=\n== |\Z)", out, re.DOTALL)}


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


def run_script(
    image: str, wheels: Path, script: str, *, name: str, network: Sequence[str] = ("--network", "none")
) -> subprocess.CompletedProcess[str]:
    """``bash -c script`` in a container of ``image`` with the checkout at /src and the wheels at /wheels;
    no container of it is left afterwards."""
    test_id = uuid.uuid4().hex[:6]
    try:
        proc = subprocess.run(
            [
                "podman",
                "run",
                "--rm",
                "--name",
                f"fpt{test_id}-{name}",
                "--label",
                f"{TEST_LABEL}={test_id}",
                *RUN_FLAGS,
                *network,
                "--volume",
                f"{REPO}:/src:ro",
                "--volume",
                f"{wheels}:/wheels:ro",
                image,
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
    assert podman("ps", "--all", "--quiet", "--filter", f"label={TEST_LABEL}={test_id}").stdout.strip() == ""
    return proc


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
        echo "== again"; echo "FLANNELD_IFACE=eth9" >> /etc/default/flanneld
        echo "# stale" >> /opt/flannel-py/lib/python3.11/site-packages/supervisor/__init__.py
        /src/tools/install --find-links /wheels
        grep -q FLANNELD_IFACE=eth9 /etc/default/flanneld && echo settings-kept
        grep -q "# stale" /opt/flannel-py/lib/python3.11/site-packages/supervisor/__init__.py || echo code-replaced
        echo "== uninstall"; /src/tools/install --uninstall
        test ! -e /opt/flannel-py && test ! -e /usr/local/bin/flanneld && test ! -e /etc/systemd/system/flanneld.service
        test -e /etc/default/flanneld && echo uninstalled
    """
    proc = run_script(fresh_debian, wheels, script, name="install")
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    section = sections(out)

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
    assert "code-replaced" in section["again"]  # the same version again: the wheel's code, not what was there
    assert "uninstalled" in section["uninstall"]


# ---------------------------------------------------------------- tools/install's apt path


@pytest.fixture(scope="module")
def bare_debian() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root for podman and network namespaces")
    if missing := podman_missing():
        pytest.skip(f"needs {missing}")
    return local_base_image(BARE_DEBIAN)


def test_tools_install_names_what_is_missing_and_stops_without_apt(bare_debian: str, wheels: Path) -> None:
    """The decision of the apt path, without any mirror: on a Debian 12 with python3 only, --no-apt names
    exactly the packages tools/install would get with apt, exits 1, and has installed nothing."""
    script = """set -u
        echo "== before"; for t in iptables nft ip; do command -v $t || echo "no $t"; done
        python3 -c 'import ensurepip' 2>/dev/null || echo "no ensurepip"
        echo "== no-apt"; /src/tools/install --no-apt --find-links /wheels; echo "exit $?"
        echo "== after"; test -e /opt/flannel-py || echo "no venv"
    """
    proc = run_script(bare_debian, wheels, script, name="bare")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    section = sections(proc.stdout)
    assert {"no iptables", "no nft", "no ip", "no ensurepip"} <= set(section["before"].splitlines()), out
    assert f"install: missing: {' '.join(APT_PACKAGES)} (install them, or drop --no-apt)" in proc.stderr
    assert section["no-apt"].strip() == "exit 1", out
    assert section["after"].strip() == "no venv", out


def test_tools_install_gets_the_missing_packages_with_apt(bare_debian: str, wheels: Path) -> None:
    """On a Debian 12 with python3 only, tools/install installs exactly what is missing with apt (the
    container's own sources list: Debian's mirror, reached through MirrorForwarder from a namespace with
    no route out), then the venv as usual."""
    if reason := mirror_unreachable():
        pytest.skip(f"Debian's package mirror is not reachable from this machine ({reason})")
    script = f"""set -u
        echo "== apt"; /src/tools/install --find-links /wheels; echo "exit $?"
        echo "== after"; dpkg-query -W -f '${{Package}} ${{Status}}\\n' {" ".join(APT_PACKAGES)}
        flanneld --version
    """
    ns = create_netns(f"fpt{uuid.uuid4().hex[:6]}-apt")
    try:
        with MirrorForwarder(ns.name) as mirror:
            network = ["--network", f"ns:/run/netns/{ns.name}"]
            network += [arg for host in DEBIAN_HOSTS for arg in ("--add-host", f"{host}:127.0.0.1")]
            proc = run_script(bare_debian, wheels, script, name="bare", network=network)
    finally:
        delete_netns(ns)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    section = sections(proc.stdout)
    assert f"install: apt-get install {' '.join(APT_PACKAGES)}" in section["apt"], out
    assert section["apt"].strip().endswith("exit 0"), out
    for package in APT_PACKAGES:
        assert f"{package} install ok installed" in section["after"], out
    assert mirror.forwarded > 0 and not mirror.refused, (mirror.forwarded, mirror.refused)


# ---------------------------------------------------------------- systemctl start flanneld


NODE_IP = "10.199.0.1"
NETWORK = "10.244.0.0/16"
# flanneld.service's CapabilityBoundingSet: CHOWN(0) KILL(5) SETGID(6) SETUID(7) SETPCAP(8) NET_ADMIN(12)
# NET_RAW(13), as /proc/<pid>/status shows it
UNIT_CAP_BOUNDING = f"{sum(1 << bit for bit in (0, 5, 6, 7, 8, 12, 13)):016x}"


class SystemdNode:
    """A container booted with systemd as PID 1 in network namespace ``ns`` (SYSTEMD_RUN_FLAGS)."""

    def __init__(self, name: str, test_id: str, ns: str, image: str, wheels: Path) -> None:
        self.name = name
        podman(
            "run",
            "--detach",
            "--name",
            name,
            "--label",
            f"{TEST_LABEL}={test_id}",
            *SYSTEMD_RUN_FLAGS,
            "--network",
            f"ns:/run/netns/{ns}",
            "--volume",
            f"{REPO}:/src:ro",
            "--volume",
            f"{wheels}:/wheels:ro",
            image,
            "/sbin/init",
        )

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = podman("exec", self.name, "bash", "-c", script, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in {self.name}: {script!r} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def show(self, *properties: str) -> dict[str, str]:
        out = self.sh(f"systemctl show flanneld.service {' '.join('-p ' + p for p in properties)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def booted(self) -> str | None:
        state = self.sh("systemctl is-system-running", check=False).stdout.strip()
        return state if state in ("running", "degraded") else None


def test_systemctl_start_flanneld_brings_up_the_node(fresh_debian: str, wheels: Path) -> None:
    """tools/install in a container whose PID 1 is systemd, settings as an operator writes them, then
    ``systemctl start flanneld``: Type=notify readiness, status text, sandbox, subnet.env, flannel.1, the
    lease in etcd, the watchdog fed; ``systemctl stop`` leaves the network as it is."""
    if shutil.which("etcd") is None or shutil.which("runc") is None:
        pytest.skip("needs etcd-server and runc (tools/bootstrap installs them)")
    test_id = uuid.uuid4().hex[:6]
    ns = create_netns(f"fpt{test_id}-sd")
    etcd = EtcdServer(Path(tempfile.mkdtemp(prefix=f"fpt{test_id}-etcd-")) / "data")
    node: SystemdNode | None = None
    try:
        # the node's NIC: a veth pair inside the namespace (nothing in the host's)
        ns.ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
        ns.ip("addr", "add", f"{NODE_IP}/24", "dev", "ul0")
        ns.ip("link", "set", "ul0", "up")
        ns.ip("link", "set", "ul1", "up")
        in_netns(ns.name, etcd.start)
        store = EtcdHttp(etcd.endpoint, ns=ns.name)
        config = json.dumps({"Network": NETWORK, "Backend": {"Type": "vxlan"}})
        ns.run(["etcdctl", "--endpoints", etcd.endpoint, "put", "/coreos.com/network/config", config])

        booting = time.monotonic()
        node = SystemdNode(f"fpt{test_id}-systemd", test_id, ns.name, fresh_debian, wheels)
        wait_until(node.booted, timeout=120, interval=0.5, what="systemd to finish booting")
        installing = time.monotonic()
        node.sh("/src/tools/install --find-links /wheels")
        node.sh(
            "cat >> /etc/default/flanneld <<'EOF'\n"
            f"FLANNELD_ETCD_ENDPOINTS={etcd.endpoint}\nFLANNELD_IFACE=ul0\nFLANNELD_IP_MASQ=true\nEOF"
        )
        started = time.monotonic()
        boot_seconds, install_seconds = installing - booting, started - installing
        node.sh("systemctl enable --now flanneld", timeout=180)  # README's command, as printed
        start_seconds = time.monotonic() - started
        assert node.sh("systemctl is-enabled flanneld").stdout.strip() == "enabled"

        # Type=notify: `systemctl start` returned once READY=1 came, so the unit is up right now
        shown = node.show(
            "ActiveState", "SubState", "Result", "StatusText", "MainPID", "NRestarts", "WatchdogUSec",
            "WatchdogTimestampMonotonic",
        )  # fmt: skip
        assert (shown["ActiveState"], shown["SubState"], shown["NRestarts"]) == ("active", "running", "0"), (
            shown
        )
        assert shown["StatusText"] == "lease-service: SERVING, backend: SERVING", shown
        assert shown["WatchdogUSec"] == "30s", shown
        pid = int(shown["MainPID"])
        main = node.sh(f"tr '\\0' ' ' < /proc/{pid}/cmdline; echo; cat /proc/{pid}/status").stdout
        assert "/usr/local/bin/flanneld --run-dir /run/flannel" in main, main
        status = dict(line.split(":\t", 1) for line in main.splitlines() if ":\t" in line)
        assert status["CapBnd"].strip() == UNIT_CAP_BOUNDING and status["NoNewPrivs"].strip() == "1", main
        # the sandbox is real: a mount namespace of its own, / read-only, the run dir writable
        mounts = node.sh(
            f"readlink /proc/1/ns/mnt /proc/{pid}/ns/mnt; grep -E ' / | /run/flannel ' /proc/{pid}/mountinfo"
        ).stdout.splitlines()
        assert mounts[0] != mounts[1], mounts
        assert any(m.split()[4] == "/" and m.split()[5].startswith("ro") for m in mounts[2:]), mounts
        assert any(m.split()[4] == "/run/flannel" and m.split()[5].startswith("rw") for m in mounts[2:]), (
            mounts
        )

        subnet_env = dict(
            line.split("=", 1)
            for line in node.sh("cat /run/flannel/subnet.env").stdout.split()
            if "=" in line
        )
        subnet = ipaddress.IPv4Interface(subnet_env["FLANNEL_SUBNET"]).network
        assert subnet_env["FLANNEL_NETWORK"] == NETWORK and subnet.subnet_of(ipaddress.IPv4Network(NETWORK))
        assert (subnet_env["FLANNEL_MTU"], subnet_env["FLANNEL_IPMASQ"]) == ("1450", "true"), subnet_env
        [device] = json.loads(ns.ip("-d", "-j", "link", "show", "flannel.1"))
        assert (
            device["linkinfo"]["info_kind"] == "vxlan" and device["linkinfo"]["info_data"]["local"] == NODE_IP
        )
        leases = store.get_prefix("/coreos.com/network/subnets/")
        key = f"/coreos.com/network/subnets/{subnet.network_address}-{subnet.prefixlen}"
        assert list(leases) == [key] and json.loads(leases[key])["PublicIP"] == NODE_IP, leases
        described = node.sh("flannelctl status").stdout  # README's command, as printed
        assert described.count("SERVING (service SERVING)") == 2 and f"subnet {subnet}" in described, (
            described
        )

        # the unit as installed, under the running systemd
        assert node.sh("systemd-analyze verify /etc/systemd/system/flanneld.service 2>&1").stdout == ""
        security = node.sh("systemd-analyze security --no-pager flanneld.service").stdout
        exposure = re.search(r"Overall exposure level for flanneld\.service: (\d+\.\d)", security)
        assert exposure is not None, security
        readme = re.search(r"overall exposure (\d+\.\d)", (REPO / "README.md").read_text())
        assert readme is not None and readme.group(1) == exposure.group(1), (exposure.group(1), security)

        # WATCHDOG=1 every WatchdogSec/2 (15 s): the timestamp moves on, and the unit stays up
        first = int(shown["WatchdogTimestampMonotonic"])
        wait_until(
            lambda: int(node.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]) > first,
            timeout=45,
            interval=1,
            what="a WATCHDOG=1 after the first",
        )
        watched = time.monotonic() - started
        assert node.show("ActiveState", "NRestarts") == {"ActiveState": "active", "NRestarts": "0"}

        # stop: flanneld goes, the network stays (device, rules, subnet.env, lease)
        node.sh("systemctl stop flanneld", timeout=60)
        assert node.show("ActiveState", "Result") == {"ActiveState": "inactive", "Result": "success"}
        ns.ip("link", "show", "flannel.1")
        assert "FLANNEL-POSTRTG" in node.sh("iptables-save -t nat").stdout
        assert node.sh("cat /run/flannel/subnet.env").stdout.count("FLANNEL_SUBNET=") == 1
        assert list(store.get_prefix("/coreos.com/network/subnets/")) == [key]
        journal = node.sh("journalctl -u flanneld --no-pager -o cat").stdout
        assert "flanneld stopped (dataplane left as it is)" in journal, journal

        # --uninstall under the running systemd: the unit is disabled and gone, the network still stays
        node.sh("/src/tools/install --uninstall")
        assert node.sh("systemctl cat flanneld.service", check=False).returncode != 0
        node.sh("test ! -e /etc/systemd/system/multi-user.target.wants/flanneld.service")
        ns.ip("link", "show", "flannel.1")
        print(
            f"boot {boot_seconds:.1f}s, tools/install {install_seconds:.1f}s, systemctl enable --now "
            f"{start_seconds:.1f}s, a watchdog beat {watched:.1f}s after the start; "
            f"exposure {exposure.group(1)}"
        )
    except BaseException:
        if node is not None:
            print(node.sh("journalctl --no-pager -n 200", check=False).stdout)
        raise
    finally:
        remove_labelled(test_id)
        etcd.kill()
        shutil.rmtree(etcd.data_dir.parent, ignore_errors=True)
        kill_namespace_processes(ns.name)
        delete_netns(ns)
