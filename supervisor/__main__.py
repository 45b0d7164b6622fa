"""``flanneld``: wires flags, privileges, children, healthz and the supervision loop together."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import flannel_flags
from supervisor import cli, logs, privileges
from supervisor.child import Child
from supervisor.healthz import HealthzServer
from supervisor.supervise import Supervisor, child_environment


async def _amain(config: cli.Config, sink: logs.LogSink) -> int:
    env = child_environment(os.environ)
    lease = Child(privileges.lease_launch(config), sink, config.probe, config.stop_grace, env)
    backend = Child(privileges.backend_launch(config), sink, config.probe, config.stop_grace, env)
    supervisor = Supervisor(config, lease, backend)
    supervisor.install_signal_handlers()
    healthz = None
    if config.healthz_port:
        healthz = HealthzServer(str(config.healthz_ip), config.healthz_port, supervisor.statuses)
        try:
            await healthz.start()
        except OSError as exc:
            print(f"flanneld: --healthz-port {config.healthz_port}: cannot listen: {exc}", file=sys.stderr)
            return 1
    try:
        return await supervisor.run()
    finally:
        if healthz is not None:
            await healthz.stop()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cleanup"]:  # flanneld cleanup [--dry-run]: the backend's cleanup, its privileges
        from supervisor import cleanup

        return cleanup.main(argv[1:])
    try:
        config = cli.parse(argv, os.environ)
    except flannel_flags.Done as done:
        print(done.text)
        return 0
    except cli.ConfigError as exc:
        print(f"flanneld: {exc}", file=sys.stderr)
        return 2
    sink = logs.LogSink(config.log_format)
    logs.install(sink)
    for notice in config.notices:
        logging.getLogger("flanneld").warning("%s", notice)
    try:
        privileges.check_supervisor(config)
        privileges.prepare_run_dir(config)
    except (privileges.PrivilegeError, OSError) as exc:
        print(f"flanneld: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_amain(config, sink))


if __name__ == "__main__":
    sys.exit(main())
