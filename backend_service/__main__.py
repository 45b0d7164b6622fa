"""flannel-backend: parses the command line, then loads and runs the daemon (:mod:`backend_service.daemon`)
or ``cleanup``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import flannel_flags
from backend_service import cli
from flannel_rpc.exitcodes import ExitCode
from flannel_rpc.logs import configure_logging

log = logging.getLogger("backend_service")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cleanup"]:  # flannel-backend cleanup [--dry-run]
        from backend_service import cleanup

        return cleanup.main(argv[1:])
    try:
        settings = cli.parse(argv)
    except (flannel_flags.Done, cli.UsageError) as ended:
        return flannel_flags.report(ended, "flannel-backend", ExitCode.USAGE)
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
