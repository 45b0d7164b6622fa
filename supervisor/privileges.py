"""Privilege separation: the launcher command lines that drop capabilities per child, and the run dir.

Children are started through util-linux ``setpriv``, which changes ids and capability sets and then
``exec``s the child, so nothing runs between ``fork`` and ``exec`` in this (threaded) process:

* lease service: every capability set empty (effective, permitted, inheritable, ambient, bounding),
  ``no_new_privs``, as ``--lease-user``/``--lease-group`` when given; as uid 0 the "root is special"
  securebits are set and locked as well, so that uid 0 alone grants nothing.
* backend: uid 0 with exactly ``CAP_NET_ADMIN`` and ``CAP_NET_RAW`` in every set (ambient included, so
  they survive ``exec`` of helpers such as ``iptables-restore``), ``no_new_privs``, and the lease group as
  a supplementary group so that it can connect to the lease socket.

Both get ``--pdeathsig SIGTERM``: if flanneld itself dies, its children are told to stop.

flanneld itself stays root with its capabilities: whatever restarts the backend must be able to give it
its capabilities again. It joins the lease group too (:func:`join_socket_group`): its health probe must
reach a lease socket owned by the lease user, and root without ``CAP_DAC_OVERRIDE`` (which the systemd
unit's bounding set leaves out) is refused like anyone else outside the socket's group.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flannel_flags.table import FLAGS
from flannel_rpc.setpriv import setpriv_prefix
from flannel_rpc.sockets import BACKEND_SOCKET, LEASE_SOCKET
from supervisor.cli import Config, Identity
from supervisor.runlock import open_run_dir

SETPRIV = "/usr/bin/setpriv"

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SETUID = 7
CAP_SETGID = 6
CAP_SETPCAP = 8
CAP_CHOWN = 0

BACKEND_CAPS = ("net_admin", "net_raw")
BACKEND_CAP_MASK = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)

_ROOT_IS_NOT_SPECIAL = "+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked,+keep_caps_locked"

SECRET_FLAGS = frozenset("--" + flag.name for flag in FLAGS if flag.secret)


class PrivilegeError(RuntimeError):
    """flanneld lacks what it needs to start its children with the right privileges."""


@dataclass(frozen=True)
class Launch:
    """A child's full command line (launcher prefix + program + flags) and its health socket."""

    name: str
    argv: tuple[str, ...]
    socket: Path
    secrets: tuple[tuple[str, str], ...] = ()
    """Environment variables for the child only (secrets that must not show in its command line)."""

    def display(self) -> str:
        """The command line for logs, with secrets masked."""
        words = list(self.argv)
        for i, word in enumerate(words):
            if word in SECRET_FLAGS and i + 1 < len(words):
                words[i + 1] = "***"
        return " ".join(words)


def _setpriv() -> str:
    return os.environ.get("FLANNELD_SETPRIV", SETPRIV)


def lease_launcher(identity: Identity | None) -> list[str]:
    """``setpriv`` prefix for the lease service: no capabilities at all, optionally another uid/gid."""
    options = ["--pdeathsig", "SIGTERM"]
    uid = identity.uid if identity else 0
    if identity is not None:
        options += ["--regid", str(identity.gid), "--clear-groups"]
        if identity.uid != 0:
            options += ["--reuid", str(identity.uid)]
    if uid == 0:
        options += ["--securebits", _ROOT_IS_NOT_SPECIAL]
    return setpriv_prefix(_setpriv(), (), options)


def backend_launcher(lease_gid: int | None) -> list[str]:
    """``setpriv`` prefix for the backend: uid 0 with CAP_NET_ADMIN and CAP_NET_RAW only."""
    groups = ["--groups", str(lease_gid)] if lease_gid else ["--clear-groups"]
    return setpriv_prefix(_setpriv(), BACKEND_CAPS, ["--pdeathsig", "SIGTERM", *groups])


def _default_cmd(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def lease_launch(config: Config) -> Launch:
    """The lease service's command line: launcher, program, ``--run-dir``, socket group, its flags."""
    program = list(config.lease_cmd) or _default_cmd("lease_service")
    args = ["--run-dir", str(config.run_dir)]
    if config.socket_group:
        args += ["--socket-group", config.socket_group]
    flags, secrets = _secrets_to_environment(list(config.lease_args))
    argv = lease_launcher(config.lease_identity) + program + args + flags
    return Launch("lease-service", tuple(argv), config.run_dir / LEASE_SOCKET, secrets)


def _secrets_to_environment(flags: list[str]) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """Move secret flags (``--etcd-password X``) into ``FLANNELD_*`` variables, which the child reads
    as well as flags: a command line is readable by every user in /proc/<pid>/cmdline, an environment
    only by the process's owner."""
    kept: list[str] = []
    secrets: list[tuple[str, str]] = []
    i = 0
    while i < len(flags):
        word = flags[i]
        name, eq, value = word.partition("=")
        if name in SECRET_FLAGS and (eq or i + 1 < len(flags)):
            if not eq:
                value = flags[i + 1]
                i += 1
            secrets.append(("FLANNELD_" + name[2:].upper().replace("-", "_"), value))
        else:
            kept.append(word)
        i += 1
    return kept, tuple(secrets)


def backend_launch(config: Config) -> Launch:
    """The backend's command line (flannel-backend or ``--backend-cmd``) with ``--run-dir`` and its flags."""
    program = list(config.backend_cmd) or _default_cmd("backend_service")
    gid = socket_gid(config)
    argv = backend_launcher(gid) + program + ["--run-dir", str(config.run_dir)] + list(config.backend_args)
    return Launch("backend", tuple(argv), config.run_dir / BACKEND_SOCKET)


def socket_gid(config: Config) -> int | None:
    """The group that owns the run dir and lease socket, if not root's."""
    if config.socket_group is not None:
        import grp

        group = config.socket_group
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        return gid or None
    if config.lease_identity is not None and config.lease_identity.gid != 0:
        return config.lease_identity.gid
    return None


def join_socket_group(config: Config) -> int | None:
    """Add the socket group to flanneld's own supplementary groups (it holds ``CAP_SETGID``), so that
    its health probe reaches the lease socket (mode 0660, owned by the lease user) without
    ``CAP_DAC_OVERRIDE``; the gid joined, or None when the socket group is root's."""
    gid = socket_gid(config)
    if gid is None:
        return None
    groups = os.getgroups()
    if gid not in groups:
        try:
            os.setgroups([*groups, gid])
        except PermissionError as exc:
            raise PrivilegeError(
                f"cannot join the lease socket's group {gid} (flanneld needs CAP_SETGID): {exc.strerror}"
            ) from exc
    return gid


def prepare_run_dir(config: Config, dir_fd: int | None = None) -> None:
    """Set up the run dir so that only the two children can reach the sockets.

    Owner root, group the lease group. Mode 0750 when the lease service runs as uid 0 (it creates its
    socket as the owner); 01770 when it runs as another uid, which must create ``lease.sock`` and the
    subnet file there: group-writable, and sticky so that neither child can unlink the other's socket.
    Nobody else can enter it. Everything goes through a descriptor of the directory opened without
    following symlinks (``dir_fd``, from :func:`supervisor.runlock.open_run_dir`), so a symlink planted
    in place of the run dir or of a file in it is refused or left alone, never followed.
    """
    own_fd = dir_fd is None
    fd = open_run_dir(config.run_dir) if dir_fd is None else dir_fd
    try:
        gid = socket_gid(config) or 0
        lease_uid = config.lease_identity.uid if config.lease_identity else 0
        mode = 0o750 if lease_uid == 0 else 0o1770
        os.fchown(fd, 0, gid)
        os.fchmod(fd, mode)
        _hand_over_leftovers(fd, lease_uid, gid)
    finally:
        if own_fd:
            os.close(fd)


def _hand_over_leftovers(dir_fd: int, lease_uid: int, gid: int) -> None:
    """Files an earlier run left under another owner, which the lease service could not replace in a
    sticky directory: a stale ``lease.sock`` is removed, ``subnet.env`` is given to the lease user.
    Symlinks are never followed (``lstat``, ``follow_symlinks=False``)."""
    try:
        st = os.stat(LEASE_SOCKET, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if st.st_uid != lease_uid and stat.S_ISSOCK(st.st_mode):
            os.unlink(LEASE_SOCKET, dir_fd=dir_fd)
    try:
        st = os.stat("subnet.env", dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_uid != lease_uid:
        os.chown("subnet.env", lease_uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _allows(st: os.stat_result, uid: int, gid: int, bits: int) -> bool:
    """What the mode bits grant ``uid``/``gid`` with no supplementary group and no capability (ACLs
    are not consulted)."""
    if st.st_uid == uid:
        granted = (st.st_mode >> 6) & 7
    elif st.st_gid == gid:
        granted = (st.st_mode >> 3) & 7
    else:
        granted = st.st_mode & 7
    return granted & bits == bits


def _unreachable(path: Path, uid: int, gid: int, bits: int) -> str | None:
    """Why ``uid``/``gid`` cannot use ``path`` (search every ancestor, then ``bits`` on the path
    itself), or None. Both the path as given and its target when it is a symlink are walked."""
    for candidate in dict.fromkeys([path, path.resolve()]):
        for ancestor in reversed(candidate.parents):
            try:
                st = ancestor.stat()
            except OSError as exc:
                return f"{ancestor}: {exc.strerror}"
            if not _allows(st, uid, gid, 1):
                return f"{ancestor} is mode {stat.S_IMODE(st.st_mode):04o} owned by {st.st_uid}:{st.st_gid}"
        if bits:
            try:
                st = candidate.stat()
            except OSError as exc:
                return f"{candidate}: {exc.strerror}"
            if not _allows(st, uid, gid, bits):
                return f"{candidate} is mode {stat.S_IMODE(st.st_mode):04o} owned by {st.st_uid}:{st.st_gid}"
    return None


def check_lease_reach(config: Config, launch: Launch) -> None:
    """Fail early, naming the path, when the lease user could not start the lease service or reach its
    run dir (an interpreter under /root, mode 0700, is the usual case): otherwise the child would die
    at exec with a message that does not say what to do."""
    identity = config.lease_identity
    if identity is None:
        return
    who = f"the lease user {identity.user or identity.uid} (uid {identity.uid}, gid {identity.gid})"
    advice = (
        "install flannel-py where that user can read it (e.g. a venv under /opt/flannel-py, as "
        "tools/install does), point --lease-cmd at such an interpreter, or give --lease-user root"
    )
    program = launch.argv[launch.argv.index("--") + 1]
    found = shutil.which(program)
    checks: list[tuple[Path, int]] = [(Path(found) if found else Path(program), 1)]
    if not config.lease_cmd:  # our own interpreter: its prefix (the venv) and this installation
        checks += [(Path(sys.prefix), 5), (Path(__file__).resolve().parent.parent, 5)]
    for path, bits in checks:
        why = _unreachable(path.absolute(), identity.uid, identity.gid, bits)
        if why is not None:
            raise PrivilegeError(f"{who} cannot run {program}: {why}; {advice}")
    why = _unreachable(config.run_dir.absolute().parent, identity.uid, identity.gid, 1)
    if why is not None:
        raise PrivilegeError(
            f"{who} cannot reach --run-dir {config.run_dir}: {why}; give a run dir it can "
            "reach (the default /run/flannel is) or --lease-user"
        )


def effective_caps(pid: int | str = "self") -> int:
    """The effective capability mask of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise PrivilegeError(f"no CapEff in /proc/{pid}/status")


def check_supervisor(config: Config, setpriv: str | None = None) -> None:
    """Fail early, with what is missing, when flanneld cannot launch its children as intended."""
    launcher = setpriv or _setpriv()
    if not os.access(launcher, os.X_OK):
        raise PrivilegeError(f"{launcher} not found or not executable (util-linux setpriv is needed)")
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"flanneld must run as root to set its children's privileges (euid {os.geteuid()})"
        )
    needed: Sequence[tuple[int, str]] = [
        (CAP_SETPCAP, "CAP_SETPCAP"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
        (CAP_CHOWN, "CAP_CHOWN"),
    ]
    if config.lease_identity is not None:
        needed = [*needed, (CAP_SETUID, "CAP_SETUID"), (CAP_SETGID, "CAP_SETGID")]
    eff = effective_caps()
    missing = [name for bit, name in needed if not eff & (1 << bit)]
    if missing:
        raise PrivilegeError(f"flanneld lacks {', '.join(missing)} (CapEff {eff:016x})")
