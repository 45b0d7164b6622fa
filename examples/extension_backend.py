#!/usr/bin/env python3
"""flannel's `extension` backend, written the way a third party would write a flannel-py backend:
against the public flannel.v1 contract only (the generated stubs in proto/ and plain grpcio).

Network config, as flannel's::

    {"Network": "10.244.0.0/16",
     "Backend": {"Type": "extension",
                 "PreStartupCommand": "...",     # its output becomes this node's BackendData
                 "PostStartupCommand": "...",    # env NETWORK, SUBNET, PUBLIC_IP
                 "SubnetAddCommand": "...",      # env SUBNET, PUBLIC_IP; stdin: the peer's BackendData
                 "SubnetRemoveCommand": "..."}}  # same

Commands run with ``sh -c``. Run it as ``python examples/extension_backend.py --run-dir /run/flannel``,
or under flanneld with ``--backend-cmd "python /path/extension_backend.py --run-dir {run_dir}"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from proto.flannel.v1 import backend_pb2, backend_pb2_grpc, lease_pb2, lease_pb2_grpc

log = logging.getLogger("extension-backend")
Msg = lease_pb2.WatchLeasesResponse
TYPE = "extension"


@dataclass(frozen=True)
class Commands:
    pre_startup: str = ""
    post_startup: str = ""
    subnet_add: str = ""
    subnet_remove: str = ""

    @classmethod
    def from_backend_json(cls, text: str) -> Commands:
        doc = json.loads(text or "{}")
        return cls(
            doc.get("PreStartupCommand", ""),
            doc.get("PostStartupCommand", ""),
            doc.get("SubnetAddCommand", ""),
            doc.get("SubnetRemoveCommand", ""),
        )


async def sh(command: str, env: dict[str, str], stdin: str = "") -> tuple[int, str]:
    """Run ``sh -c command``; (exit status, combined output)."""
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate((stdin + "\n").encode())
    return proc.returncode or 0, out.decode(errors="replace").strip()


class ExtensionBackend(backend_pb2_grpc.BackendServiceServicer):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.channel = grpc.aio.insecure_channel(f"unix:{run_dir / 'lease.sock'}")
        self.leases = lease_pb2_grpc.LeaseServiceStub(self.channel)
        self.health = health.aio.HealthServicer()
        self.commands = Commands()
        self.own: lease_pb2.Lease | None = None
        self.applied: dict[str, lease_pb2.Lease] = {}  # peers whose add command succeeded
        self.rejected: dict[str, lease_pb2.RejectedLease] = {}
        self.cursor = ""
        self.synced = False
        self.last_reconcile: datetime | None = None
        self.mtu = 0

    # -- BackendService ------------------------------------------------------------------------
    async def Describe(
        self, request: lease_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> lease_pb2.DescribeResponse:
        return lease_pb2.DescribeResponse(
            name="extension backend (example)",
            version="0.1.0",
            api_versions=["flannel.v1"],
            capabilities=["extension"],
        )

    async def GetStatus(
        self, request: backend_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.GetStatusResponse:
        reply = backend_pb2.GetStatusResponse(
            backend_type=TYPE,
            mtu=self.mtu,
            peers=[backend_pb2.Peer(lease=l, mode=TYPE) for l in self.applied.values()],
            rejected=list(self.rejected.values()),
            applied_cursor=self.cursor,
            synced=self.synced,
            last_reconcile_outcome="ok",
        )
        if self.own is not None:
            reply.own_lease.CopyFrom(self.own)
        if self.last_reconcile is not None:
            stamp = Timestamp()
            stamp.FromDatetime(self.last_reconcile)
            reply.last_reconcile.CopyFrom(stamp)
        return reply

    # -- following the lease service -----------------------------------------------------------
    async def wait_for_the_lease_service(self) -> None:
        """flanneld starts us together with the lease service, which answers nothing before it serves:
        wait until its health says SERVING before acting (the gate of the contract)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        while True:
            call = stub.Watch(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True)
            try:
                async for reply in call:
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.aio.AioRpcError as exc:
                log.info("waiting for the lease service: %s", exc.code().name)
            finally:
                call.cancel()
            await asyncio.sleep(0.2)

    async def start(self) -> None:
        await self.wait_for_the_lease_service()
        reply = await self.leases.GetNetworkConfig(
            lease_pb2.GetNetworkConfigRequest(), wait_for_ready=True, timeout=30
        )
        config = reply.config
        if config.backend_type != TYPE:  # a configuration error: exit 2, flanneld stops the node with it
            log.error("the network config's Backend.Type is %r, not %r", config.backend_type, TYPE)
            raise SystemExit(2)
        self.commands = Commands.from_backend_json(config.backend)
        self.mtu = reply.external_interface.mtu  # the lease service chose the interface: no second opinion
        data = ""
        if self.commands.pre_startup:
            status, out = await sh(self.commands.pre_startup, {})
            if status:
                raise SystemExit(f"PreStartupCommand failed ({status}): {out}")
            data = json.dumps(out)  # flannel publishes the command's output as a JSON string
        self.acquire_request = lease_pb2.AcquireLeaseRequest(
            backend_type=TYPE, backend_data=data, mtu=self.mtu
        )
        await self._acquire(config)

    async def _acquire(self, config: lease_pb2.NetworkConfig | None = None) -> None:
        reply = await self.leases.AcquireLease(self.acquire_request, wait_for_ready=True, timeout=60)
        first = self.own is None
        self.own = reply.lease
        if first and config is not None and self.commands.post_startup:
            status, out = await sh(
                self.commands.post_startup,
                {"NETWORK": config.network, "SUBNET": self.own.subnet, "PUBLIC_IP": self.own.public_ip},
            )
            if status:
                raise SystemExit(f"PostStartupCommand failed ({status}): {out}")

    async def follow(self) -> None:
        """Follow WatchLeases forever, resuming by cursor after the lease service restarts."""
        delay = 0.1
        while True:
            try:
                staging: dict[str, lease_pb2.Lease] | None = None
                view = dict(self.applied)
                async for msg in self.leases.WatchLeases(lease_pb2.WatchLeasesRequest(cursor=self.cursor)):
                    if msg.kind == Msg.SNAPSHOT:
                        if msg.reset or staging is None:
                            staging = {}
                        staging.update({e.lease.key: e.lease for e in msg.events})
                        continue
                    if msg.kind == Msg.SYNCED:
                        view, staging = staging or {}, None
                    elif msg.kind == Msg.DELTA:
                        for event in msg.events:
                            if event.type == lease_pb2.LeaseEvent.REMOVE:
                                view.pop(event.lease.key, None)
                            else:
                                view[event.lease.key] = event.lease
                    if msg.cursor:
                        await self.apply(view)
                        self.cursor = msg.cursor
                        if msg.kind == Msg.SYNCED:
                            self.synced = True
                            await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
                delay = 0.1
            except grpc.aio.AioRpcError as exc:
                log.warning("lease stream broke (%s); resuming from the last cursor", exc.code().name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
            try:
                await self._acquire()  # a restarted lease service needs our backend data again
            except grpc.aio.AioRpcError as exc:
                log.warning("re-acquire failed (%s)", exc.code().name)

    async def apply(self, view: dict[str, lease_pb2.Lease]) -> None:
        """Run remove commands for peers gone or changed, add commands for new or changed ones."""
        assert self.own is not None
        wanted: dict[str, lease_pb2.Lease] = {}
        for key, lease in view.items():
            if key == self.own.key:
                continue
            if lease.backend_type != TYPE:
                self.rejected[key] = lease_pb2.RejectedLease(
                    lease=lease,
                    reason="BACKEND_MISMATCH",
                    message=f"lease {key}: backend {lease.backend_type!r}",
                )
                continue
            self.rejected.pop(key, None)
            wanted[key] = lease
        for key in [k for k in self.rejected if k not in view]:
            del self.rejected[key]
        for key, lease in list(self.applied.items()):
            if wanted.get(key) != lease:
                await self._run(self.commands.subnet_remove, lease, "SubnetRemoveCommand")
                del self.applied[key]
        for key, lease in wanted.items():
            added = key in self.applied or await self._run(
                self.commands.subnet_add, lease, "SubnetAddCommand"
            )
            if added and key not in self.applied:
                self.applied[key] = lease
        self.last_reconcile = datetime.now(UTC)

    async def _run(self, command: str, lease: lease_pb2.Lease, name: str) -> bool:
        if not command:
            return True
        stdin = ""
        if lease.backend_data:
            try:
                value = json.loads(lease.backend_data)
            except json.JSONDecodeError:
                value = None
            stdin = value if isinstance(value, str) else ""
        status, out = await sh(command, {"SUBNET": lease.subnet, "PUBLIC_IP": lease.public_ip}, stdin)
        if status:
            log.error("%s for %s failed (%d): %s", name, lease.subnet, status, out)
            return False
        log.info("%s for %s: ok%s", name, lease.subnet, f" ({out})" if out else "")
        return True


async def main_async(args: argparse.Namespace) -> int:
    backend = ExtensionBackend(Path(args.run_dir))
    server = grpc.aio.server()
    backend_pb2_grpc.add_BackendServiceServicer_to_server(backend, server)
    health_pb2_grpc.add_HealthServicer_to_server(backend.health, server)
    reflection.enable_server_reflection(
        [
            backend_pb2.DESCRIPTOR.services_by_name["BackendService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    sock = Path(args.run_dir) / "backend.sock"
    sock.unlink(missing_ok=True)
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    os.chmod(sock, 0o660)
    await backend.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await backend.start()
        follower = asyncio.ensure_future(backend.follow())
        await stop.wait()
        follower.cancel()
        return 0
    finally:
        await server.stop(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", default="/run/flannel")
    args, _ = parser.parse_known_args()  # flanneld may pass flags meant for flannel-backend
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
