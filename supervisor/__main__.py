"""``flanneld``: wires flags, the run dir lock, privileges, children, healthz, systemd notification and
the supervision loop together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

import flannel_flags
from flannel_rpc.exitcodes import ExitCode
from supervisor import cli, logs, notify, privileges
from supervisor.child import Child
from supervisor.healthz import HealthzServer
from supervisor.runlock import RunDirBusy, RunDirUnsafe, RunLock, open_run_dir
from supervisor.supervise import Supervisor, child_environment

log = logging.getLogger("supervisor")


async def _amain(config: cli.Config, sink: logs.LogSink) -> int:
    env = child_environment(os.environ)
    lease = Child(privileges.lease_launch(config), sink, config.probe, config.stop_grace, env)
    backend = Child(privileges.backend_launch(config), sink, config.probe, config.stop_grace, env)
    supervisor = Supervisor(config, lease, backend)
    supervisor.install_signal_handlers()
    notifier = notify.Notifier(os.environ)
    healthz = None
    if config.healthz_port:
        healthz = HealthzServer(str(config.healthz_ip), config.healthz_port, supervisor.statuses)
        try:
            await healthz.start()
        except OSError as exc:
            print(f"flanneld: --healthz-port {config.healthz_port}: cannot listen: {exc}", file=sys.stderr)
            return ExitCode.USAGE
    notifying = asyncio.create_task(
        notify.run(notifier, supervisor.statuses, lambda: supervisor.stopping), name="systemd-notify"
    )
    supervisor.on_stopping = lambda: notifier.send("STOPPING=1")
    try:
        return await supervisor.run()
    finally:
        notifying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await notifying
        notifier.close()
        if healthz is not None:
            await healthz.stop()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cleanup"]:  # flanneld cleanup [--dry-run]: the backend's cleanup, its privileges
        from supervisor import cleanup

        return cleanup.main(argv[1:])
    try:
        config = cli.parse(argv, os.environ)
    except (flannel_flags.Done, cli.ConfigError) as ended:
        return flannel_flags.report(ended, "flanneld", ExitCode.USAGE)
    sink = logs.LogSink(config.log_format)
    logs.install(sink)
    for notice in config.notices:
        logging.getLogger("flanneld").warning("%s", notice)
    lock = None
    try:
        try:
            privileges.check_supervisor(config)
            privileges.check_lease_reach(config, privileges.lease_launch(config))
            dir_fd = open_run_dir(config.run_dir)
            try:
                lock = RunLock(config.run_dir, dir_fd)  # before anything in the run dir is touched
                privileges.prepare_run_dir(config, dir_fd)
            finally:
                os.close(dir_fd)
            privileges.join_socket_group(config)
        except (privileges.PrivilegeError, RunDirBusy, RunDirUnsafe, OSError) as exc:
            print(f"flanneld: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        if config.lease_identity is not None and config.lease_identity.uid == 0:
            log.warning(
                "--lease-user %s: the lease service runs as uid 0; without capabilities, but file "
                "ownership still lets it write root's files: prefer an unprivileged user",
                config.lease_identity.user or 0,
            )
        return asyncio.run(_amain(config, sink))
    finally:
        sink.close()
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    sys.exit(main())
