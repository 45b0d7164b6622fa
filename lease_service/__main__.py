"""flannel-lease-service: parses the command line, then loads and runs what the mode needs
(:mod:`lease_service.daemon`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import flannel_flags
from flannel_rpc.exitcodes import ExitCode
from flannel_rpc.logs import configure_logging
from lease_service import cli

log = logging.getLogger("lease_service")


def _without_python_ssl(settings: cli.Settings) -> None:
    """In etcd mode nothing uses Python's ``ssl`` module: etcd's TLS is gRPC's own (BoringSSL inside grpc's
    extension). asyncio imports it only to offer TLS streams, and it maps OpenSSL (4.2 MB of RSS). Kubernetes
    mode (HTTPS to the API server) and ``--metrics-listen`` (prometheus_client imports it) keep it. Made
    unimportable, asyncio runs as on a Python built without ssl."""
    if not settings.kube_subnet_mgr and settings.metrics_listen is None and "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # the documented way to refuse an import


SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL while another waits for it (Python's default is 0.005). The loop thread
is busy for long stretches (a listing of 10,000 leases converted 25 keys a turn), and a helper thread's
blocking calls each give the GIL away and wait for it again: subnet.env, written off the loop (mkdir,
mkstemp, write, fsync, chmod, rename), took ~200 ms on the path to the backend's own lease at 10,000 leases
instead of ~10 ms (AcquireLease 206-317 ms -> ~90 ms, first object 0.57-0.80 s -> 0.41 s)."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = cli.parse(sys.argv[1:] if argv is None else argv)
    except (flannel_flags.Done, cli.UsageError) as ended:
        return flannel_flags.report(ended, "flannel-lease-service", ExitCode.USAGE)
    _without_python_ssl(settings)
    sys.setswitchinterval(SWITCH_INTERVAL)
    import asyncio

    from lease_service.daemon import serve

    configure_logging(settings.verbosity)
    for notice in settings.notices:
        log.warning("%s", notice)
    code = asyncio.run(serve(settings))
    # Leave without the interpreter's final garbage collection: with large modules loaded it took
    # seconds on a busy node, past the supervisor's grace period. Everything that matters (sockets,
    # store, logs) is closed or flushed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
