"""A stand-in for flannel-lease-service / flannel-backend: serves grpc.health.v1 on <run-dir>/<socket>.

Switches (given before the flags flanneld appends, which are recorded and otherwise ignored):
  --name NAME             name used in the events file and log lines
  --socket FILE           socket file name inside --run-dir (lease.sock, backend.sock)
  --events FILE           append "<name> <event> <pid> [detail]" lines: start, serving (detail: the
                          time.time() of SERVING), term, exit, link
  --serve-after S         report SERVING only after S seconds
  --serve-on-signal       report SERVING only once SIGUSR1 arrives (after --serve-after)
  --crash-at-start CODE   exit with CODE at once
  --crash-after S         exit 4 (transient) S seconds after SERVING
  --hang-after S          S seconds after SERVING, block the event loop (health stops answering)
  --ignore-term           ignore SIGTERM (flanneld must SIGKILL)
  --try-link-add IFNAME   run `ip link add IFNAME type veth peer ...` at start and log ok/denied in the events
"""

from __future__ import annotations

import argparse
import asyncio
import grp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flannel_rpc import UnixServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--events")
    parser.add_argument("--serve-after", type=float, default=0.0)
    parser.add_argument("--serve-on-signal", action="store_true")
    parser.add_argument("--crash-at-start", type=int)
    parser.add_argument("--crash-after", type=float)
    parser.add_argument("--hang-after", type=float)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--try-link-add")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--socket-group")
    args, _flanneld_flags = parser.parse_known_args()

    def event(what: str, detail: str = "") -> None:
        if args.events:
            with open(args.events, "a") as f:
                f.write(f"{args.name} {what} {os.getpid()} {detail}".rstrip() + "\n")

    def on_term(signum: int, frame: object) -> None:
        event("term")
        print(f"{args.name}: got SIGTERM", flush=True)
        if not args.ignore_term:
            event("exit")
            os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    event("start", " ".join(sys.argv[1:]))
    print(f"{args.name}: started pid {os.getpid()} argv {' '.join(sys.argv[1:])}", flush=True)
    print(f"{args.name}: a line on stderr", file=sys.stderr, flush=True)
    if os.environ.get("FLANNEL_LOG_FORMAT") == "json":  # what flanneld asks of its children
        record = {
            "ts": "2026-01-02T03:04:05.678Z",
            "level": "WARNING",
            "logger": "fake",
            "msg": f"{args.name}: structured",
            "node": "n1",
            "count": 3,
        }
        print(json.dumps(record), file=sys.stderr, flush=True)
    if args.try_link_add:
        proc = subprocess.run(
            ["ip", "link", "add", args.try_link_add, "type", "veth", "peer", "name", args.try_link_add + "p"],
            capture_output=True,
            text=True,
            check=False,
        )
        event("link", "ok" if proc.returncode == 0 else "denied:" + proc.stderr.strip().replace(" ", "_"))
    if args.crash_at_start is not None:
        print(f"{args.name}: crashing at start", flush=True)
        event("exit")
        sys.exit(args.crash_at_start)
    asyncio.run(serve(args, event))


async def serve(args: argparse.Namespace, event) -> None:
    group = args.socket_group
    gid = None if not group else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    server = UnixServer(Path(args.run_dir) / args.socket, [], lambda s: None, socket_gid=gid)
    signalled = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, signalled.set)
    await server.start()
    await asyncio.sleep(args.serve_after)
    if args.serve_on_signal:
        await signalled.wait()
    # the event (and its time) before SERVING: whoever has seen SERVING finds it in the events file
    event("serving", f"{time.time():.6f}")
    await server.set_serving(True)
    print(f"{args.name}: SERVING", flush=True)
    if args.crash_after is not None:
        await asyncio.sleep(args.crash_after)
        print(f"{args.name}: crashing", flush=True)
        event("exit")
        os._exit(4)
    if args.hang_after is not None:
        await asyncio.sleep(args.hang_after)
        print(f"{args.name}: hanging", flush=True)
        event("hang")
        time.sleep(3600)  # noqa: ASYNC251 - blocks the loop on purpose: health goes unanswered
    await asyncio.Event().wait()


if __name__ == "__main__":
    main()
