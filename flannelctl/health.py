"""``flannelctl health``: one grpc.health.v1 check of one service, as an exit status, for probes.

Kubelet's exec probes and other supervisors run it; it prints one line and exits 0 (healthy) or 1 (not),
never 2: a socket that is missing or does not answer is a failed probe, not a usage error.

- readiness (the default): the server answers ``SERVING`` for the whole server (service ``""``);
- ``--live``: the server answers at all, whatever its status. A lease service that waits for its store, or
  a backend that is not in sync, is alive but not ready: restarting it would not help.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from flannelctl.command import Command
from flannelctl.connect import Connection, CtlError, Endpoint, backend_endpoint, lease_endpoint

TARGETS = {"lease-service": lease_endpoint, "backend": backend_endpoint}


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: healthy or not, and the line that says why."""

    healthy: bool
    line: str


def check(endpoint: Endpoint, timeout: float, live: bool) -> Verdict:
    """Ask ``endpoint`` for its health once; readiness wants SERVING, liveness any answer."""
    try:
        with Connection(endpoint, timeout) as conn:
            status = conn.health()
    except CtlError as exc:
        return Verdict(False, f"{endpoint.what}: {exc}")
    healthy = live or status == "SERVING"
    kind = "alive" if live else "ready"
    return Verdict(
        healthy, f"{endpoint.what} at {endpoint.socket}: {status} ({kind if healthy else 'not ' + kind})"
    )


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=sorted(TARGETS), help="which socket: lease.sock or backend.sock")
    p.add_argument(
        "--live", action="store_true", help="liveness: healthy when the server answers, whatever its status"
    )


def run(args: argparse.Namespace) -> int:
    verdict = check(TARGETS[args.target](args.run_dir), args.timeout, args.live)
    print(verdict.line)
    return 0 if verdict.healthy else 1


COMMAND = Command(
    "health",
    help="one health check as an exit status (probes)",
    description="Check one service's grpc.health.v1 status on its socket in --run-dir. "
    "Exit 0 when it is SERVING (with --live: when it answers at all), else 1; "
    "prints one line either way.",
    run=run,
    arguments=_arguments,
)
