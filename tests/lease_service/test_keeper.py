"""The lease keeper: a renewal in flight never overwrites a lease acquired meanwhile, and subnet.env is
written off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import TypeVar

import pytest

from lease_service.keeper import KeeperSettings, LeaseKeeper
from lease_service.lease import Lease, LeaseAttrs
from lease_service.netconfig import NetworkConfig, parse_network_config
from lease_service.stream import LeaseHub
from lease_service.subnet.base import LeaseSink, StateUnavailable
from proto.flannel.v1 import lease_pb2

T = TypeVar("T")

Event = lease_pb2.WatchLeaseResponse
ATTRS = LeaseAttrs(public_ip=IPv4Address("192.168.1.10"), backend_type="vxlan")


def _lease(subnet: str, expires_in: float) -> Lease:
    return Lease(
        key=subnet.replace("/", "-"),
        subnet=IPv4Network(subnet),
        ipv6_subnet=None,
        attrs=ATTRS,
        expiration=datetime.now(UTC) + timedelta(seconds=expires_in),
    )


class SlowRenewals:
    """A subnet manager whose renewals wait until the test lets them through."""

    def __init__(self) -> None:
        self.acquired: list[Lease] = [_lease("10.244.1.0/24", 1), _lease("10.244.2.0/24", 36000)]
        self.renewing = asyncio.Event()
        self.let_renewal_through = asyncio.Event()

    async def acquire_lease(
        self, config: NetworkConfig, attrs: LeaseAttrs, previous: object, known: object = None
    ) -> Lease:
        return self.acquired.pop(0)

    async def renew_lease(self, config: NetworkConfig, lease: Lease) -> Lease:
        self.renewing.set()
        await self.let_renewal_through.wait()
        return _lease(str(lease.subnet), 7200)

    # the rest of the SubnetManager protocol: never reached by these tests

    @property
    def store_id(self) -> str:
        return "slow-renewals"

    async def get_network_config(self) -> NetworkConfig:
        raise AssertionError("the keeper is handed its config")

    async def stored_public_ips(self) -> tuple[IPv4Address | None, IPv6Address | None]:
        return None, None

    async def restore_lease(self, config: NetworkConfig, lease: Lease, attrs: LeaseAttrs) -> Lease:
        return lease

    async def state_at(
        self, config: NetworkConfig, revision: int, keep: Callable[[Lease], T]
    ) -> dict[str, T]:
        raise StateUnavailable("no history here")

    async def run_watch(self, config: NetworkConfig, hub: LeaseSink) -> None:
        raise AssertionError("these tests feed the hub themselves")

    async def close(self) -> None:
        pass


async def test_a_renewal_in_flight_does_not_overwrite_a_newer_acquire() -> None:
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    manager = SlowRenewals()
    keeper = LeaseKeeper(manager, config, LeaseHub("test").subscribe(), KeeperSettings(renew_margin=3600))
    await keeper.acquire(ATTRS, 1450)  # expires in 1 s, inside the margin: renewed at once
    runner = asyncio.create_task(keeper.run())
    try:
        await asyncio.wait_for(manager.renewing.wait(), 5)
        newer = await keeper.acquire(ATTRS, 1450)  # the backend restarted and acquired meanwhile
        manager.let_renewal_through.set()
        for _ in range(50):
            await asyncio.sleep(0)
        assert keeper.lease == newer and str(newer.subnet) == "10.244.2.0/24"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_subnet_env_is_written_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lease_service import subnetfile

    threads: list[str] = []
    real_write = subnetfile.write

    def write(path: Path, text: str) -> None:
        threads.append(threading.current_thread().name)
        real_write(path, text)

    monkeypatch.setattr(subnetfile, "write", write)
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    manager = SlowRenewals()
    keeper = LeaseKeeper(
        manager,
        config,
        LeaseHub("test").subscribe(),
        KeeperSettings(subnet_file=tmp_path / "subnet.env"),
    )
    await keeper.acquire(ATTRS, 1450)
    assert threads and threads[0] != threading.main_thread().name
    assert "FLANNEL_SUBNET=10.244.1.1/24" in (tmp_path / "subnet.env").read_text()


class Reacquiring(SlowRenewals):
    """A subnet manager that hands out its leases in turn and never expires them."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired = [_lease("10.244.1.0/24", 36000), _lease("10.244.2.0/24", 36000)]


async def test_the_keeper_follows_the_hub_a_removed_lease_is_lost_and_reacquired() -> None:
    config = parse_network_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    hub = LeaseHub("test")
    hub.reset({}, revision=1)
    keeper = LeaseKeeper(
        Reacquiring(),
        config,
        hub.subscribe(),
        KeeperSettings(retry_initial=0.01),
    )
    held = await keeper.acquire(ATTRS, 1450)
    events = keeper.watch()
    assert isinstance(events, AsyncGenerator)
    assert (await asyncio.wait_for(anext(events), 5)).kind == Event.CURRENT
    runner = asyncio.create_task(keeper.run())
    try:
        hub.apply([(held.key, held)], revision=2)  # our own write: no event
        hub.apply([("10.244.9.0-24", _lease("10.244.9.0/24", 36000))], revision=3)  # another node's
        hub.apply([(held.key, None)], revision=4)  # ours removed from the store
        lost = await asyncio.wait_for(anext(events), 5)
        again = await asyncio.wait_for(anext(events), 5)
        assert (lost.kind, lost.lease.key) == (Event.LOST, held.key)
        assert (again.kind, again.lease.subnet) == (Event.REACQUIRED, "10.244.2.0/24")
        assert keeper.lease is not None and str(keeper.lease.subnet) == "10.244.2.0/24"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await events.aclose()
