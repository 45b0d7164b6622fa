"""``flanneld`` running: logs, both children (already started, see :mod:`supervisor.__main__`), healthz,
systemd notification and the supervision loop wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from flannel_rpc.exitcodes import ExitCode
from supervisor import cli, logs, notify
from supervisor.child import Child
from supervisor.healthz import HealthzServer
from supervisor.privileges import Launch
from supervisor.spawn import Spawned
from supervisor.supervise import Supervisor

log = logging.getLogger("supervisor")


def run(
    config: cli.Config, launches: Sequence[Launch], started: Sequence[Spawned], env: Mapping[str, str]
) -> int:
    """Supervise the lease service and the backend (``launches``, whose first incarnations are ``started``)
    until stopped; flanneld's exit code."""
    sink = logs.LogSink(config.log_format)
    logs.install(sink)
    try:
        for notice in config.notices:
            logging.getLogger("flanneld").warning("%s", notice)
        if config.lease_identity is not None and config.lease_identity.uid == 0:
            log.warning(
                "--lease-user %s: the lease service runs as uid 0; without capabilities, but file "
                "ownership still lets it write root's files: prefer an unprivileged user",
                config.lease_identity.user or 0,
            )
        return asyncio.run(_amain(config, sink, launches, started, env))
    finally:
        sink.close()


async def _amain(
    config: cli.Config,
    sink: logs.LogSink,
    launches: Sequence[Launch],
    started: Sequence[Spawned],
    env: Mapping[str, str],
) -> int:
    lease, backend = (
        Child(launch, sink, config.probe, config.stop_grace, env, first)
        for launch, first in zip(launches, started, strict=True)
    )
    try:
        return await _supervise(config, lease, backend)
    finally:
        for child in (lease, backend):
            child.abandon()  # when never taken over (flanneld stopped before it could)


async def _supervise(config: cli.Config, lease: Child, backend: Child) -> int:
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
