"""flannel.v1.BackendService: what the dataplane was told, for grpcurl and for operators."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from proto.flannel.v1 import backend_pb2, backend_pb2_grpc, lease_pb2

from .leases import held_message
from .status import Status
from .validate import trimmed

VERSION = "0.1.0"


class BackendServicer(backend_pb2_grpc.BackendServiceServicer):
    def __init__(self, status: Status) -> None:
        self.status = status

    async def Describe(
        self, request: lease_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> lease_pb2.DescribeResponse:
        return lease_pb2.DescribeResponse(
            name="flannel-py backend",
            version=VERSION,
            api_versions=["flannel.v1"],
            capabilities=["vxlan", "host-gw", "wireguard", "ipv6", "ip-masq"],
        )

    def _peers(self) -> list[backend_pb2.Peer]:
        leases = self.status.leases()
        out = []
        for key, mode in self.status.peers.items():
            held = leases.get(key)
            lease = held_message(held) if held is not None else lease_pb2.Lease(key=key)
            out.append(backend_pb2.Peer(lease=trimmed(lease), mode=mode))
        return out

    async def GetStatus(
        self, request: backend_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.GetStatusResponse:
        s = self.status
        reply = backend_pb2.GetStatusResponse(
            backend_type=s.backend_type,
            device=s.device,
            mtu=s.mtu,
            peers=self._peers(),
            rejected=list(s.rejected.values()),
            last_reconcile_outcome=s.last_outcome,
            applied_cursor=s.applied_cursor,
            synced=s.synced,
            ip_masq=s.ip_masq,
            own_lease_conflict=s.own_lease_conflict,
        )
        if s.own_lease is not None:
            reply.own_lease.CopyFrom(s.own_lease)
        if s.wireguard is not None:
            reply.wireguard.CopyFrom(await s.wireguard())
        if s.last_reconcile is not None:
            stamp = Timestamp()
            stamp.FromDatetime(s.last_reconcile)
            reply.last_reconcile.CopyFrom(stamp)
        return reply
