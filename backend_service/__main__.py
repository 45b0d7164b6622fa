"""flannel-backend: parses the command line, then loads and runs the daemon (:mod:`backend_service.daemon`)
or ``cleanup``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import flannel_flags
from backend_service import cli
from flannel_rpc import gil
from flannel_rpc.exitcodes import ExitCode
from flannel_rpc.logs import configure_logging

log = logging.getLogger("backend_service")


@contextmanager
def _ssl_kept_out() -> Iterator[None]:
    """While asyncio loads: ``ssl``, which asyncio loads when it can (for TLS transports), cannot be imported.
    With OpenSSL's libraries it was 4.5 MB of the backend's RSS, in a process that speaks no TLS (unix
    sockets and netlink; pyroute2 gets a stand-in, see :mod:`backend_service`). Anything that needs ``ssl``
    later (prometheus_client, for ``--metrics-listen``) still loads it."""
    blocked = "ssl" not in sys.modules
    if blocked:
        sys.modules["ssl"] = None  # type: ignore[assignment] # its import fails: asyncio goes without
    try:
        yield
    finally:
        if blocked and sys.modules.get("ssl", False) is None:
            del sys.modules["ssl"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cleanup"]:  # flannel-backend cleanup [--dry-run]
        from backend_service import cleanup

        return cleanup.main(argv[1:])
    try:
        settings = cli.parse(argv)
    except (flannel_flags.Done, cli.UsageError) as ended:
        return flannel_flags.report(ended, "flannel-backend", ExitCode.USAGE)
    gil.hand_over_quickly()  # before gRPC's and our threads start
    with _ssl_kept_out():
        import asyncio

    from backend_service import malloc
    from backend_service.daemon import serve

    malloc.settle()  # before gRPC's threads
    configure_logging(settings.verbosity)
    for notice in settings.notices:
        log.warning("%s", notice)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
