"""Fixtures for the etcd client tests: a client on the shared etcd, a throw-away PKI."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flannel_testkit.etcd import EtcdServer
from lease_service.etcd import EtcdClient, EtcdSettings, WatchBatch, WatchEvent


def fast_settings(*endpoints: str, **overrides: Any) -> EtcdSettings:
    """Settings with short deadlines and back-off so failure tests finish quickly; ``overrides`` are
    EtcdSettings fields."""
    values: dict[str, Any] = {"call_timeout": 1.0, "backoff_initial": 0.05, "backoff_max": 0.5}
    values.update(overrides)
    return EtcdSettings(endpoints=tuple(endpoints), **values)


@pytest.fixture
async def client(etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    async with EtcdClient(fast_settings(etcd.endpoint)) as c:
        yield c


async def collect(
    watch: AsyncGenerator[WatchBatch, None], done: Callable[[list[WatchBatch]], bool], timeout: float = 15.0
) -> list[WatchBatch]:
    """Read batches from ``watch`` until ``done(batches)``; fail after ``timeout``. Closes the watch."""
    batches: list[WatchBatch] = []

    async def read() -> None:
        async for batch in watch:
            batches.append(batch)
            if done(batches):
                return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"watch did not finish within {timeout}s; got {batches!r}") from None
    finally:
        await watch.aclose()
    return batches


def polled(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A plain predicate in the shape :func:`flannel_testkit.wait.async_wait_until` polls."""

    async def check() -> bool:
        return predicate()

    return check


def events_of(batches: list[WatchBatch]) -> list[WatchEvent]:
    return [event for batch in batches for event in batch.events]


def reached(revision: int) -> Callable[[list[WatchBatch]], bool]:
    """A ``done`` predicate for :func:`collect`: some batch brought the watcher up to ``revision``."""
    return lambda batches: any(b.revision >= revision for b in batches)


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        cwd=d,
    )
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return Pki(
        ca=d / "ca.crt",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
    )
