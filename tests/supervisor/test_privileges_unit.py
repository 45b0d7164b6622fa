"""The launcher command lines and the run dir, without starting anything."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from supervisor import cli, privileges
from supervisor.runlock import RunDirUnsafe


def test_the_lease_service_gets_no_capabilities_and_root_is_not_special() -> None:
    argv = privileges.lease_launcher(None)
    assert argv[0] == "/usr/bin/setpriv" and argv[-1] == "--"
    assert {"--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"} <= set(argv)
    assert "+noroot,+noroot_locked" in argv[argv.index("--securebits") + 1]


def test_the_lease_service_can_run_as_another_user() -> None:
    argv = privileges.lease_launcher(cli.Identity(uid=65534, gid=65534))
    assert argv[argv.index("--reuid") + 1] == "65534" and argv[argv.index("--regid") + 1] == "65534"
    assert "--clear-groups" in argv and "--securebits" not in argv


def test_the_backend_gets_exactly_net_admin_and_net_raw_and_the_lease_group() -> None:
    argv = privileges.backend_launcher(65534)
    caps = "-all,+net_admin,+net_raw"
    assert {
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        f"--bounding-set={caps}",
        "--no-new-privs",
    } <= set(argv)
    assert argv[argv.index("--groups") + 1] == "65534"
    assert "--reuid" not in argv


def test_default_children_are_the_project_modules_with_run_dir_and_their_flags(tmp_path: Path) -> None:
    config = cli.parse(
        [
            "--run-dir",
            str(tmp_path),
            "--iface",
            "eth0",
            "--etcd-prefix",
            "/p",
            "--lease-group",
            "nogroup",
            "--etcd-password",
            "s3cret",
        ],
        {},
    )
    lease = privileges.lease_launch(config)
    program = lease.argv[lease.argv.index("--") + 1 :]
    assert program[:3] == (sys.executable, "-m", "lease_service")
    assert program[3:] == (
        "--run-dir",
        str(tmp_path),
        "--socket-group",
        "nogroup",
        "--etcd-prefix",
        "/p",
        "--iface",
        "eth0",
    )
    assert lease.secrets == (("FLANNELD_ETCD_PASSWORD", "s3cret"),)
    assert lease.socket == tmp_path / "lease.sock"
    assert "s3cret" not in lease.display()
    backend = privileges.backend_launch(config)
    program = backend.argv[backend.argv.index("--") + 1 :]
    assert program == (sys.executable, "-m", "backend_service", "--run-dir", str(tmp_path))


def test_a_third_party_backend_gets_the_same_flags(tmp_path: Path) -> None:
    config = cli.parse(
        ["--run-dir", str(tmp_path), "--backend-cmd", "/opt/wg-backend --fast", "--ip-masq"], {}
    )
    backend = privileges.backend_launch(config)
    assert backend.argv[backend.argv.index("--") + 1 :] == (
        "/opt/wg-backend",
        "--fast",
        "--run-dir",
        str(tmp_path),
        "--ip-masq",
    )


def test_the_run_dir_is_private_to_root_and_the_lease_group(tmp_path: Path) -> None:
    root_only = tmp_path / "a"
    privileges.prepare_run_dir(cli.parse(["--run-dir", str(root_only), "--lease-user", "root"], {}))
    st = root_only.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and (st.st_uid, st.st_gid) == (0, 0)

    shared = tmp_path / "b"
    privileges.prepare_run_dir(
        cli.parse(["--run-dir", str(shared), "--lease-user", "nobody", "--lease-group", "nogroup"], {})
    )
    st = shared.stat()
    # the lease user must create its socket there: group-writable, sticky, nothing for others
    assert stat.S_IMODE(st.st_mode) == 0o1770 and (st.st_uid, st.st_gid) == (0, 65534)


def test_the_supervisor_checks_it_can_grant_what_it_must() -> None:
    config = cli.parse([], {})
    if os.geteuid() == 0:
        privileges.check_supervisor(config)
    try:
        privileges.check_supervisor(config, setpriv="/nonexistent/setpriv")
    except privileges.PrivilegeError as exc:
        assert "setpriv" in str(exc)
    else:
        raise AssertionError("a missing setpriv must be reported")


def test_leftovers_of_a_root_run_are_handed_to_a_new_lease_user(tmp_path: Path) -> None:
    import socket

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run_dir / "lease.sock"))
    stale.close()
    (run_dir / "subnet.env").write_text("FLANNEL_NETWORK=10.244.0.0/16\n")
    (run_dir / "backend.sock").write_text("")  # the backend (root) replaces its own
    privileges.prepare_run_dir(cli.parse(["--run-dir", str(run_dir), "--lease-user", "nobody"], {}))
    assert not (run_dir / "lease.sock").exists()
    assert (run_dir / "subnet.env").stat().st_uid == 65534
    assert (run_dir / "backend.sock").exists()


def test_the_etcd_password_reaches_the_lease_service_by_environment_not_by_command_line(
    tmp_path: Path,
) -> None:
    config = cli.parse(
        ["--run-dir", str(tmp_path), "--etcd-password", "s3cret", "--etcd-username", "flannel"], {}
    )
    launch = privileges.lease_launch(config)
    assert not any("s3cret" in word for word in launch.argv)
    assert dict(launch.secrets) == {"FLANNELD_ETCD_PASSWORD": "s3cret"}
    assert "--etcd-username" in launch.argv


def test_the_lease_service_reads_the_password_from_that_variable() -> None:
    from lease_service import cli as lease_cli

    settings = lease_cli.parse(["--etcd-username", "flannel"], {"FLANNELD_ETCD_PASSWORD": "s3cret"})
    assert settings.etcd.password == "s3cret"


def test_the_lease_service_runs_as_nobody_unless_told_otherwise() -> None:
    default = cli.parse([], {}).lease_identity
    assert default is not None and (default.uid, default.gid) == (65534, 65534)
    launcher = privileges.lease_launcher(default)
    assert launcher[launcher.index("--reuid") + 1] == "65534" and "--clear-groups" in launcher
    root = cli.parse(["--lease-user", "root"], {}).lease_identity
    assert root is not None and root.uid == 0
    assert "--reuid" not in privileges.lease_launcher(root)


def test_a_lease_user_that_cannot_reach_the_interpreter_is_refused_by_name(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    program = private / "bin" / "lease"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    private.chmod(0o700)
    config = cli.parse(["--run-dir", "/run/flannel-test", "--lease-cmd", str(program)], {})
    try:
        privileges.check_lease_reach(config, privileges.lease_launch(config))
    except privileges.PrivilegeError as exc:
        assert f"the lease user nobody (uid 65534, gid 65534) cannot run {program}: /" in str(exc)
        assert "is mode 0700 owned by 0:0" in str(exc) and "--lease-cmd" in str(exc)
    else:
        raise AssertionError("an interpreter the lease user cannot reach must be refused")
    root = cli.parse(
        ["--run-dir", "/run/flannel-test", "--lease-cmd", str(program), "--lease-user", "root"], {}
    )
    privileges.check_lease_reach(root, privileges.lease_launch(root))


def test_a_run_dir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    try:
        privileges.prepare_run_dir(cli.parse(["--run-dir", str(link)], {}))
    except RunDirUnsafe as exc:
        assert "is a symlink" in str(exc)
    else:
        raise AssertionError("a symlinked run dir must be refused")
    assert stat.S_IMODE(real.stat().st_mode) != 0o1770  # untouched


def test_leftovers_that_are_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("root's\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "subnet.env").symlink_to(outside)
    privileges.prepare_run_dir(cli.parse(["--run-dir", str(run_dir)], {}))
    assert outside.stat().st_uid == 0  # not handed to the lease user through the link
