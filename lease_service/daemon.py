"""The lease service running: wires the store, the lease stream, the keeper and the gRPC server (:func:`serve`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from flannel_rpc import UnixServer
from flannel_rpc.exitcodes import ExitCode
from flannel_rpc.metrics import serve_metrics
from lease_service import cli
from lease_service.etcd import EtcdClient
from lease_service.extiface import InterfaceError, InterfaceFlags, describe, lookup
from lease_service.keeper import KeeperSettings, LeaseKeeper
from lease_service.netconfig import ConfigError
from lease_service.server import SERVICE, LeaseServicer
from lease_service.stream import LeaseHub
from lease_service.subnet.base import StoreUnavailable, SubnetManager
from lease_service.subnet.etcd import EtcdSubnetManager

log = logging.getLogger("lease_service")
T = TypeVar("T")


async def _until_answered(
    call: Callable[[], Awaitable[T]],
    waiting_for: str,
    servicer: LeaseServicer,
    errors: tuple[type[Exception], ...] = (StoreUnavailable,),
    level: int = logging.WARNING,
) -> T:
    """Retry a store call while it fails with one of ``errors`` (0.2 s, doubling up to 5 s), NOT_SERVING
    meanwhile: each new reason is logged once and named in the servicer's UNAVAILABLE answers."""
    last, delay = "", 0.2
    while True:
        try:
            return await call()
        except errors as exc:
            reason = str(exc)
            if reason != last:
                log.log(level, "waiting for %s: %s", waiting_for, reason)
                servicer.waiting_for = f"{waiting_for} ({reason})"
                last = reason
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _kube_manager(settings: cli.Settings, servicer: LeaseServicer) -> SubnetManager:
    """The Kubernetes API connection as flannel builds it: --kube-api-url and/or --kubeconfig-file, else
    in-cluster; the node name from --node-name / $NODE_NAME, else the node running $POD_NAME."""
    from lease_service.subnet import kube_config
    from lease_service.subnet.kube import KubeSubnetManager
    from lease_service.subnet.kube_api import KubeApi

    kube = settings.kube
    if kube.kubeconfig is not None:
        conn = kube_config.from_kubeconfig(kube.kubeconfig)
    elif kube.api_url is None:
        try:
            conn = kube_config.in_cluster()
        except ConfigError as exc:
            raise cli.UsageError(
                f"--kube-subnet-mgr: no --kube-api-url or --kubeconfig-file, and {exc}"
            ) from exc
    else:
        conn = kube_config.KubeConnection(kube.api_url)
    if kube.api_url is not None:
        conn = conn.with_server(kube.api_url)
    api = KubeApi(conn)
    manager = KubeSubnetManager(
        api, kube.node_name or "", kube.net_config_path, kube.annotation_prefix, kube.set_network_unavailable
    )
    if kube.node_name is None:
        namespace, pod = kube.pod_namespace, kube.pod_name
        if not (pod and namespace):
            await api.close()
            raise cli.UsageError(
                "--kube-subnet-mgr needs the node name: set NODE_NAME (or --node-name, or POD_NAME and POD_NAMESPACE)"
            )
        node_name = await _until_answered(
            lambda: manager.pod_node_name(namespace, pod), f"pod {namespace}/{pod}", servicer
        )
        if not node_name:
            await api.close()
            raise cli.UsageError(f"pod {namespace}/{pod} is not scheduled on a node yet")
        manager.node_name = node_name
    return manager


async def serve(settings: cli.Settings) -> int:
    """Run until SIGTERM/SIGINT (exit OK) or a failure (its exit code); a signal cancels whatever is
    being waited for (the store, the Kubernetes API, a stream), so a stop is prompt in every phase."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    work = asyncio.create_task(_run(settings), name="lease-service")
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not work.done():
        work.cancel()
    try:
        return await work
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        return ExitCode.OK


async def _run(settings: cli.Settings) -> int:
    if not serve_metrics(settings.metrics_listen, log):
        return ExitCode.USAGE
    kube_mode = settings.kube_subnet_mgr
    servicer = LeaseServicer("kube" if kube_mode else "etcd")
    server = UnixServer(
        settings.socket_path,
        [SERVICE],
        servicer.add_to,
        socket_gid=settings.socket_gid,
        tcp_listen=settings.grpc_listen,
    )
    await server.start()  # health answers NOT_SERVING from here on, whatever is awaited next
    manager: SubnetManager | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        if kube_mode:
            servicer.waiting_for = "the Kubernetes client"
            try:
                manager = await _kube_manager(settings, servicer)
            except (cli.UsageError, ConfigError) as exc:
                log.error("%s", exc)
                return ExitCode.USAGE
        else:
            manager = EtcdSubnetManager(
                EtcdClient(settings.etcd), settings.etcd_prefix, lease_ttl=settings.lease_ttl
            )
        config = await _until_answered(
            manager.get_network_config,
            "a usable network config",
            servicer,
            (ConfigError, StoreUnavailable),
            logging.ERROR,
        )
        log.info("network config: %s, backend %s", config.network or config.ipv6_network, config.backend_type)
        public_ip, public_ipv6 = settings.public_ip, settings.public_ipv6
        # as flannel: the node's node-public-ip(v6) annotations (Kubernetes mode) replace the flags
        stored = await _until_answered(manager.stored_public_ips, "this node's stored public IPs", servicer)
        public_ip, public_ipv6 = stored[0] or public_ip, stored[1] or public_ipv6
        flags = InterfaceFlags(
            settings.ifaces, settings.iface_regexes, settings.iface_can_reach, public_ip, public_ipv6
        )
        try:
            ext = await asyncio.to_thread(lookup, flags, ipv4=config.enable_ipv4, ipv6=config.enable_ipv6)
        except InterfaceError as exc:
            log.error("cannot determine the external interface: %s", exc)
            return ExitCode.USAGE
        log.info("external interface %s", describe(ext))
        hub = LeaseHub(manager.store_id)
        keeper = LeaseKeeper(
            manager,
            config,
            hub.subscribe(),
            KeeperSettings(
                renew_margin=settings.renew_margin, subnet_file=settings.subnet_file, ip_masq=settings.ip_masq
            ),
            # etcd: the backend's lease is chosen from the leases the stream listed, not a listing of its own
            known=None if kube_mode else hub.known,
        )
        tasks.append(asyncio.create_task(manager.run_watch(config, hub), name="store-watch"))
        tasks.append(asyncio.create_task(keeper.run(), name="lease-keeper"))
        # the gate of the contract: nothing is answered (config, lease, stream) before the store has
        # answered the listing of the leases (a refused or failing list keeps the service NOT_SERVING). The
        # listing need not be complete: a stream without a cursor gets the leases as they are listed, SYNCED
        # once all are (LeaseHub.watch); a resume waits for the listing
        servicer.waiting_for = "the store's answer to the listing of the leases"
        answered = asyncio.create_task(hub.wait_answered(), name="store-answered")
        try:
            done, _ = await asyncio.wait({answered, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered.cancel()  # a task failed first, or the service is stopping
        if answered in done:
            servicer.attach(config, manager, hub, keeper, ext)
            await server.set_serving(True)
            log.info("serving leases on %s", settings.socket_path)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is answered:
                continue
            if task.exception() is not None:
                log.error("internal task %s failed: %r", task.get_name(), task.exception())
                return ExitCode.FAILURE
        return ExitCode.FAILURE
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.set_serving(False)
        await server.stop(grace=0.5)
        if manager is not None:
            await manager.close()
        log.info("stopped; the lease stays in the store until it expires")
