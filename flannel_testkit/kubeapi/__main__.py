"""``python -m flannel_testkit.kubeapi``: serve until SIGTERM/SIGINT (see the package's description)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from flannel_testkit import kubeapi
from flannel_testkit.kubeapi.nodes import DEFAULT_USER
from flannel_testkit.kubeapi.server import KubeApiServer


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    server = KubeApiServer(
        args.etcd_endpoint,
        args.prefix,
        host,
        int(port),
        user=args.user,
        bookmark_interval=args.bookmark_interval,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{server.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flannel_testkit.kubeapi",
        description=kubeapi.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--etcd-endpoint", action="append", required=True, help="etcd client URL (repeat for several members)"
    )
    parser.add_argument(
        "--prefix", default="/registry", help="etcd key prefix; Nodes live at PREFIX/minions/NAME"
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve on (port 0: a free port)")
    parser.add_argument("--user", default=DEFAULT_USER, help="the user named in 403 messages")
    parser.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds between BOOKMARKs")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
