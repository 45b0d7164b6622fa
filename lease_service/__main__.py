"""flannel-lease-service: parses the command line, then loads and runs what the mode needs
(:mod:`lease_service.daemon`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import flannel_flags
from flannel_rpc import gil
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = cli.parse(sys.argv[1:] if argv is None else argv)
    except (flannel_flags.Done, cli.UsageError) as ended:
        return flannel_flags.report(ended, "flannel-lease-service", ExitCode.USAGE)
    _without_python_ssl(settings)
    gil.hand_over_quickly()
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
