"""Privilege separation as the kernel sees it: /proc/<pid>/status, `ip link add`, socket access."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flannel_testkit.processes import close_pipes
from flannel_testkit.wait import wait_until
from supervisor import cli, privileges
from tests.supervisor.harness import Flanneld, proc_status

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NET_ADMIN_AND_RAW = "0000000000003000"
NONE = "0000000000000000"
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def test_children_get_exactly_their_capabilities(flanneld: Callable[..., Flanneld]) -> None:
    f = flanneld(args=["--lease-group", "nogroup"])
    [lease] = f.wait_pids("lease", 1)
    [backend] = f.wait_pids("backend", 1)
    f.wait_http("/healthz", 200)

    lease_status = proc_status(lease)
    assert {k: lease_status[k] for k in CAP_FIELDS} == dict.fromkeys(CAP_FIELDS, NONE)
    assert lease_status["NoNewPrivs"] == "1"
    assert lease_status["Uid"].split() == ["0"] * 4 and lease_status["Gid"].split() == ["65534"] * 4
    assert lease_status["Groups"] == ""

    backend_status = proc_status(backend)
    assert {k: backend_status[k] for k in CAP_FIELDS} == dict.fromkeys(CAP_FIELDS, NET_ADMIN_AND_RAW)
    assert backend_status["NoNewPrivs"] == "1"
    assert backend_status["Uid"].split() == ["0"] * 4
    assert backend_status["Groups"].split() == ["65534"]  # the lease group, to reach lease.sock

    # flanneld itself keeps what it needs to start the backend again
    assert int(proc_status(f.popen.pid)["CapEff"], 16) & 0x3000 == 0x3000

    run_dir = f.run_dir.stat()
    assert stat.S_IMODE(run_dir.st_mode) == 0o750 and (run_dir.st_uid, run_dir.st_gid) == (0, 65534)
    lease_sock = (f.run_dir / "lease.sock").stat()
    assert stat.S_IMODE(lease_sock.st_mode) == 0o660 and lease_sock.st_gid == 65534


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"fpt-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.netns
def test_only_the_backend_may_change_the_network(flanneld: Callable[..., Flanneld], netns: str) -> None:
    f = flanneld(
        lease=["--try-link-add", "fpl0"],
        backend=["--try-link-add", "fpb0"],
        prefix=["ip", "netns", "exec", netns],
    )
    f.wait_pids("backend", 1)
    links = wait_until(lambda: (e := [x for x in f.events() if x.what == "link"]) and len(e) == 2 and e)
    result = {e.child: e.detail for e in links}
    assert result["lease"].startswith("denied:") and "Operation_not_permitted" in result["lease"]
    assert result["backend"] == "ok"
    shown = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    assert "fpb0" in shown and "fpl0" not in shown


_PY = "/usr/bin/python3"  # readable by every user, unlike a venv under /root

_LISTEN = """
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o660); s.listen()
print("listening", flush=True)
time.sleep(60)
"""

_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("ok")
except OSError as e:
    print(type(e).__name__)
"""


def _as(launcher: list[str], code: str, *args: str) -> str:
    out = subprocess.run(
        [*launcher, _PY, "-c", code, *args], capture_output=True, text=True, timeout=20, check=False
    )
    return (out.stdout + out.stderr).strip()


@pytest.mark.skipif(not os.access(_PY, os.X_OK), reason="needs a system python3")
def test_only_the_two_children_can_reach_the_lease_socket_of_a_non_root_lease_user(open_dir: Path) -> None:
    config = cli.parse(
        ["--run-dir", str(open_dir / "run"), "--lease-user", "nobody", "--lease-group", "nogroup"], {}
    )
    privileges.prepare_run_dir(config)
    lease_sock = config.run_dir / "lease.sock"
    lease = subprocess.Popen(
        [*privileges.lease_launcher(config.lease_identity), _PY, "-c", _LISTEN, str(lease_sock)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert lease.stdout is not None and lease.stdout.readline().strip() == "listening"
        assert (lease_sock.stat().st_uid, lease_sock.stat().st_gid) == (65534, 65534)
        backend = privileges.backend_launcher(privileges.socket_gid(config))
        assert _as(backend, _CONNECT, str(lease_sock)) == "ok"
        # uid 0 without the lease group and without capabilities: not the owner, not in the group
        assert _as(privileges.lease_launcher(None), _CONNECT, str(lease_sock)) == "PermissionError"
        other = ["setpriv", "--reuid", "65533", "--regid", "65533", "--clear-groups", "--"]
        assert _as(other, _CONNECT, str(lease_sock)) == "PermissionError"
        # the backend creates its socket beside it; the sticky dir keeps the lease user from removing it
        backend_sock = config.run_dir / "backend.sock"
        bind = "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1]); print('ok')"
        assert _as(backend, bind, str(backend_sock)) == "ok"
        unlink = "import os,sys\ntry:\n os.unlink(sys.argv[1]); print('ok')\nexcept OSError as e: print(type(e).__name__)"
        assert (
            _as(privileges.lease_launcher(config.lease_identity), unlink, str(backend_sock))
            == "PermissionError"
        )
    finally:
        lease.kill()
        lease.wait()
        close_pipes(lease)


def test_the_lease_service_runs_as_the_lease_user(flanneld: Callable[..., Flanneld], open_dir: Path) -> None:
    script = "echo id=$(id -u):$(id -g) groups=$(id -G); exec sleep 60"
    f = flanneld(
        lease_cmd=f"/bin/sh -c '{script}' lease",
        args=["--lease-user", "nobody", "--run-dir", str(open_dir / "run")],
    )
    line = f.wait_line("[lease-service] id=")
    assert line.endswith("id=65534:65534 groups=65534")
    pid = int(f.wait_line("lease-service started (pid").split("(pid ")[1].split(")")[0])
    status = proc_status(pid)
    assert status["Uid"].split() == ["65534"] * 4
    assert {k: status[k] for k in CAP_FIELDS} == dict.fromkeys(CAP_FIELDS, NONE)
    assert stat.S_IMODE((open_dir / "run").stat().st_mode) == 0o1770
    # it never answers health, so the node is never ready
    assert "lease-service: STARTING" in f.wait_http("/healthz", 503)
    f.popen.terminate()
    assert f.wait() == 0


def test_the_default_lease_user_cannot_write_a_root_owned_file(
    flanneld: Callable[..., Flanneld], open_dir: Path
) -> None:
    target = open_dir / "root-owned"
    target.write_text("untouched\n")
    target.chmod(0o644)
    script = (
        f"if echo x >> {target}; then echo lease-write=ok; else echo lease-write=denied; fi; exec sleep 60"
    )
    f = flanneld(
        lease_cmd=f"/bin/sh -c '{script}' lease", lease_user=None, args=["--run-dir", str(open_dir / "run")]
    )
    assert f.wait_line("[lease-service] lease-write=").endswith("lease-write=denied")
    assert target.read_text() == "untouched\n"
    pid = int(f.wait_line("lease-service started (pid").split("(pid ")[1].split(")")[0])
    assert proc_status(pid)["Uid"].split() == ["65534"] * 4
    assert proc_status(pid)["Groups"] == ""
    f.popen.terminate()
    assert f.wait() == 0
