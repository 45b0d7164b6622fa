"""TLS with client certificates, and username/password authentication."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_testkit.etcd import EtcdServer, EtcdTls
from flannel_testkit.processes import lone_lease_service
from lease_service.etcd import EtcdClient, EtcdError, EtcdUnavailable
from tests.lease_service.etcd.conftest import Pki, collect, events_of, fast_settings, reached

pytestmark = pytest.mark.etcd


@pytest.fixture
def tls_etcd(tmp_path: Path, pki: Pki) -> Iterator[EtcdServer]:
    tls = EtcdTls(cert_file=pki.server_cert, key_file=pki.server_key, client_ca=pki.ca)
    with EtcdServer(tmp_path / "etcd-tls", tls=tls) as server:
        yield server


async def test_tls_with_a_client_certificate_reads_writes_and_watches(
    tls_etcd: EtcdServer, pki: Pki, prefix: str
) -> None:
    assert tls_etcd.endpoint.startswith("https://")
    settings = fast_settings(
        tls_etcd.endpoint, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key
    )
    async with EtcdClient(settings) as client:
        revision = await client.put(f"{prefix}/k", b"secret")
        kv, _ = await client.get(f"{prefix}/k")
        assert kv is not None and kv.value == b"secret"
        batches = await collect(client.watch_prefix(f"{prefix}/", revision), reached(revision))
        assert [e.kv.key for e in events_of(batches)] == [f"{prefix}/k"]


async def test_tls_without_a_client_certificate_is_refused(
    tls_etcd: EtcdServer, pki: Pki, prefix: str
) -> None:
    settings = fast_settings(tls_etcd.endpoint, ca_file=pki.ca, retry_budget=1.0)
    async with EtcdClient(settings) as client:
        with pytest.raises(EtcdUnavailable) as raised:
            await client.get(f"{prefix}/k")
    assert tls_etcd.endpoint in str(raised.value)


def etcdctl(server: EtcdServer, *args: str) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", server.endpoint, *args], check=True, capture_output=True, timeout=20
    )


@pytest.fixture
def auth_etcd(own_etcd: EtcdServer) -> EtcdServer:
    etcdctl(own_etcd, "user", "add", "root:rootpw")
    etcdctl(own_etcd, "user", "grant-role", "root", "root")
    etcdctl(own_etcd, "auth", "enable")
    return own_etcd


async def test_username_and_password_authenticate_every_call_and_survive_restarts_and_lost_tokens(
    auth_etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lease_service.etcd")
    settings = fast_settings(auth_etcd.endpoint, username="root", password="rootpw")
    async with EtcdClient(settings) as client:
        revision = await client.put(f"{prefix}/k", b"v")
        assert (await client.get(f"{prefix}/k"))[0] is not None

        # A restart: etcd may or may not still know our token (it replays Authenticate from its
        # log), either way the calls go on.
        await asyncio.to_thread(auth_etcd.stop)
        await asyncio.to_thread(auth_etcd.start)
        kv, _ = await client.get(f"{prefix}/k")
        assert kv is not None and kv.mod_revision == revision

        # Disabling and enabling auth forgets every token: the client authenticates again,
        # for a unary call ...
        invalidate_tokens(auth_etcd)
        kv, _ = await client.get(f"{prefix}/k")
        assert kv is not None and kv.mod_revision == revision
        assert any("token rejected" in r.getMessage() for r in caplog.records)

        # ... and for a watch (etcd creates it canceled, "invalid auth token").
        invalidate_tokens(auth_etcd)
        batches = await collect(client.watch_prefix(f"{prefix}/", revision), reached(revision))
        assert [e.kv.key for e in events_of(batches)] == [f"{prefix}/k"]
        assert any("watch refused" in r.getMessage() for r in caplog.records)


def invalidate_tokens(server: EtcdServer) -> None:
    etcdctl(server, "--user", "root:rootpw", "auth", "disable")
    etcdctl(server, "auth", "enable")


async def test_wrong_or_missing_credentials_fail_without_retrying(auth_etcd: EtcdServer, prefix: str) -> None:
    async with EtcdClient(fast_settings(auth_etcd.endpoint, username="root", password="wrong")) as client:
        with pytest.raises(EtcdError) as raised:
            await client.get(f"{prefix}/k")
        assert not isinstance(raised.value, EtcdUnavailable)
        assert "authenticat" in str(raised.value)
    async with EtcdClient(fast_settings(auth_etcd.endpoint)) as anonymous:
        with pytest.raises(EtcdError) as raised:
            await anonymous.put(f"{prefix}/k", b"v")
        assert not isinstance(raised.value, EtcdUnavailable)


def test_the_lease_service_reads_a_tls_etcd_without_pythons_ssl_module(
    tls_etcd: EtcdServer, pki: Pki, prefix: str, tmp_path: Path
) -> None:
    settings = fast_settings(
        tls_etcd.endpoint, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key
    )

    async def configure() -> None:
        async with EtcdClient(settings) as client:
            await client.put(
                f"{prefix}/config", b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
            )

    asyncio.run(configure())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tls_flags = [
        "--etcd-cafile",
        pki.ca,
        "--etcd-certfile",
        pki.client_cert,
        "--etcd-keyfile",
        pki.client_key,
    ]
    daemon = lone_lease_service(
        run_dir, tls_etcd.endpoint, prefix, tmp_path / "lease.log", *map(str, tls_flags)
    ).start()
    try:
        daemon.wait_serving(run_dir / "lease.sock")  # serving: it listed the leases over TLS
        assert daemon.pid is not None
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        assert "/_ssl." not in maps and "libssl" not in maps  # etcd's TLS is gRPC's own
    finally:
        daemon.kill()
