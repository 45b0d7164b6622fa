"""Subnet manager on the Kubernetes API: leases are Node objects.

A node's subnet is its ``spec.podCIDR`` (``spec.podCIDRs`` for dual stack); its flannel attributes
are annotations under a prefix (default ``flannel.alpha.coreos.com``), written the way flannel writes
them: one strategic-merge patch on ``nodes/<name>/status``, only when something changed, so that
kube-flannel.yml's RBAC (nodes get/list/watch, nodes/status patch) is all we need. Other nodes arrive
through our own reflector: list, then watch from the list's resourceVersion with bookmarks and a server
timeout, resume from the last resourceVersion after a dropped stream, and relist + diff on 410.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes.aio import client as kclient
from kubernetes.aio import watch as kwatch
from kubernetes.aio.client.exceptions import ApiException

from lease_service import metrics
from flannel_rpc.logs import LogOnce, label, shorten
from flannel_rpc.untrusted import ANNOTATION, JsonLimits, Rejected, decode_json
from lease_service.lease import FIELD_INVALID, MAX_BACKEND_TYPE, CorruptLease, Lease, LeaseAttrs, canonical_json, check_against_config
from lease_service.netconfig import ConfigError, NetworkConfig, parse_network_config
from lease_service.stream import Change, LeaseHub, StateUnavailable
from lease_service.subnet.base import AccessDenied, AcquireError, StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_ANNOTATION_PREFIX = "flannel.alpha.coreos.com"
DEFAULT_NET_CONFIG_PATH = Path("/etc/kube-flannel/net-conf.json")
WATCH_TIMEOUT = 300          # seconds the server keeps one watch open
STRATEGIC = "application/strategic-merge-patch+json"
LIST_RETRY_MAX = 30.0         # seconds between list attempts at most (401, 403, 400, unreachable)
#: Whole API answers (a NodeList of thousands of nodes is tens of MB; objects nest a few levels).
API_RESPONSE = JsonLimits(max_bytes=512 * 1024 * 1024, max_depth=64)
T = TypeVar("T")


@dataclass(frozen=True)
class Annotations:
    """flannel's annotation names under one prefix."""

    managed: str
    backend_data: str
    backend_v6_data: str
    backend_type: str
    public_ip: str
    public_ipv6: str
    node_public_ip: str
    node_public_ipv6: str
    public_ip_overwrite: str
    public_ipv6_overwrite: str

    @classmethod
    def for_prefix(cls, prefix: str) -> Annotations:
        """Validate ``prefix`` as flannel does (an FQDN, at most one slash) and name everything."""
        if prefix.count("/") > 1:
            raise ConfigError(f"--kube-annotation-prefix {prefix!r}: at most one slash is allowed")
        full = prefix if "/" in prefix else prefix + "/"
        if not full.endswith(("/", "-")):
            full += "-"
        if not re.fullmatch(r"(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?", full):
            raise ConfigError(f"--kube-annotation-prefix {prefix!r}: must look like fqdn/[0-9a-z-_]*")
        return cls(*(full + name for name in (
            "kube-subnet-manager", "backend-data", "backend-v6-data", "backend-type", "public-ip", "public-ipv6",
            "node-public-ip", "node-public-ipv6", "public-ip-overwrite", "public-ipv6-overwrite")))


def pod_cidrs(node: dict[str, Any]) -> tuple[IPv4Network | None, IPv6Network | None]:
    """The node's IPv4 and IPv6 pod CIDRs; raises CorruptLease naming the node."""
    name = node.get("metadata", {}).get("name", "?")
    spec = node.get("spec") or {}
    raw = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    if len(raw) > 2:
        raise CorruptLease(f"node {name}: spec.podCIDRs {raw} must be one IPv4 and/or one IPv6 CIDR")
    v4 = v6 = None
    for text in raw:
        try:
            net = ip_network(text, strict=False)
        except (ValueError, TypeError) as exc:
            raise CorruptLease(f"node {name}: pod CIDR {text!r} is not a CIDR") from exc
        if isinstance(net, IPv4Network):
            v4 = net
        else:
            v6 = net
    return v4, v6


class KubeSubnetManager:
    """flannel's kube subnet manager over ``kubernetes.aio``."""

    def __init__(
        self,
        api_client: kclient.ApiClient,
        node_name: str,
        net_config_path: Path = DEFAULT_NET_CONFIG_PATH,
        annotation_prefix: str = DEFAULT_ANNOTATION_PREFIX,
        set_network_unavailable: bool = True,
        retry_interval: float = 2.0,
    ) -> None:
        self.api_client = api_client
        self.api = kclient.CoreV1Api(api_client)
        self.node_name = node_name
        self.net_config_path = net_config_path
        self.names = Annotations.for_prefix(annotation_prefix)
        self.set_network_unavailable = set_network_unavailable
        self.retry_interval = retry_interval
        self.store_id = f"kube:{api_client.configuration.host}"
        self.skipped_nodes = 0
        self._reported = LogOnce()

    async def close(self) -> None:
        await self.api_client.close()

    # ---- config -----------------------------------------------------------------------------

    async def get_network_config(self) -> NetworkConfig:
        try:
            text = await asyncio.to_thread(self.net_config_path.read_bytes)
        except OSError as exc:
            raise ConfigError(f"cannot read the network config {self.net_config_path}: {exc.strerror}") from exc
        return parse_network_config(text, source=str(self.net_config_path))

    # ---- calls ------------------------------------------------------------------------------

    async def _call(self, what: str, call: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
        """One API call with the raw JSON result; errors become StoreUnavailable/AcquireError."""
        try:
            resp = await call()
            body = await resp.read()
            status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"Kubernetes API unreachable ({what}): {exc}") from exc
        if status >= 400:
            raise _api_error(what, status, body)
        if not body:
            return {}
        try:
            doc = decode_json(body, API_RESPONSE, f"the answer to {what}")
        except Rejected as exc:
            raise StoreUnavailable(f"Kubernetes API answered {what} with {exc.reason}: {exc.message}") from None
        if not isinstance(doc, dict):
            raise StoreUnavailable(f"Kubernetes API answered {what} with a JSON {type(doc).__name__}, not an object")
        return doc

    async def get_node(self, name: str) -> dict[str, Any]:
        return await self._call(f"get node {name}",
                                lambda: self.api.read_node_without_preload_content(name, _request_timeout=30))

    async def _patch_status(self, patch: dict[str, Any]) -> None:
        await self._call(f"patch nodes/{self.node_name}/status", lambda: self.api.patch_node_status_without_preload_content(
            self.node_name, patch, _content_type=STRATEGIC, _request_timeout=30))

    # ---- leases -----------------------------------------------------------------------------

    def node_to_lease(self, config: NetworkConfig, node: dict[str, Any]) -> Lease | None:
        """The node's lease; None when it is not managed by a kube subnet manager.
        Raises CorruptLease naming the node when it is managed but unusable."""
        meta = node.get("metadata") or {}
        name = meta.get("name", "?")
        notes = meta.get("annotations") or {}
        if notes.get(self.names.managed) != "true":
            return None
        subnet, ipv6 = pod_cidrs(node)
        if config.enable_ipv4 and subnet is None:
            raise CorruptLease(f"node {name}: no IPv4 pod CIDR (spec.podCIDR) yet")
        public_ip = _address(name, notes, self.names.public_ip, IPv4Address) if config.enable_ipv4 else None
        public_ipv6 = _address(name, notes, self.names.public_ipv6, IPv6Address) if config.enable_ipv6 else None
        if config.enable_ipv4 and public_ip is None:
            raise CorruptLease(f"node {name}: annotation {self.names.public_ip} is missing")
        backend_type = notes.get(self.names.backend_type, "")
        if not isinstance(backend_type, str) or len(backend_type) > MAX_BACKEND_TYPE:
            raise CorruptLease(f"node {label(name)}: annotation {self.names.backend_type}={shorten(backend_type)} "
                               "is not a backend type", FIELD_INVALID)
        attrs = LeaseAttrs(
            public_ip=public_ip,  # type: ignore[arg-type]
            public_ipv6=public_ipv6,  # type: ignore[arg-type]
            backend_type=backend_type,
            backend_data=_json_object(name, notes, self.names.backend_data),
            backend_v6_data=_json_object(name, notes, self.names.backend_v6_data),
        )
        lease = Lease(key=name, subnet=subnet if config.enable_ipv4 else None,
                      ipv6_subnet=ipv6 if config.enable_ipv6 else None, attrs=attrs, node_name=name)
        check_against_config(lease, config)
        return lease

    def _decode(self, config: NetworkConfig, node: dict[str, Any]) -> Lease | None:
        """The node's lease, or None (not ours to stream, or rejected: logged once per change of it)."""
        name = _node_name(node)
        try:
            lease = self.node_to_lease(config, node)
        except CorruptLease as exc:
            reason, message = exc.reason, str(exc)
        except Exception as exc:  # noqa: BLE001 - any shape of Node object is a named rejection of that node
            reason, message = "MALFORMED", f"node {label(name)}: unusable object ({type(exc).__name__})"
        else:
            self._reported.forget(name)
            return lease
        if self._reported.first(name, (reason, message)):
            self.skipped_nodes += 1
            metrics.CORRUPT_LEASES.inc()
            log.warning("skipping node %s: %s (%s)", label(name), message, reason)
        return None

    async def stored_public_ips(self) -> tuple[IPv4Address | None, IPv6Address | None]:
        """flannel reads node-public-ip(v6) annotations at start as the public IP."""
        node = await self.get_node(self.node_name)
        notes = node.get("metadata", {}).get("annotations") or {}
        return (_address(self.node_name, notes, self.names.node_public_ip, IPv4Address),  # type: ignore[return-value]
                _address(self.node_name, notes, self.names.node_public_ipv6, IPv6Address))

    async def acquire_lease(
        self, config: NetworkConfig, attrs: LeaseAttrs, previous: tuple[IPv4Network | None, IPv6Network | None]
    ) -> Lease:
        waited_for = ""
        while True:
            try:
                node = await self.get_node(self.node_name)
                subnet, ipv6 = pod_cidrs(node)
            except (StoreUnavailable, CorruptLease) as exc:
                reason = str(exc)
            else:
                if (config.enable_ipv4 and subnet is None) or (config.enable_ipv6 and ipv6 is None and not config.enable_ipv4):
                    reason = f"node {self.node_name} has no pod CIDR yet (spec.podCIDR is empty)"
                else:
                    break
            if reason != waited_for:
                log.warning("waiting to acquire a lease: %s", reason)
                waited_for = reason
            await asyncio.sleep(self.retry_interval)
        for family, net, network in (("IPv4", subnet, config.network), ("IPv6", ipv6, config.ipv6_network)):
            if net is not None and network is not None and not net.subnet_of(network):  # type: ignore[arg-type]
                raise AcquireError(f"node {self.node_name}: {family} pod CIDR {net} is outside the network {network}")
        notes = dict(node.get("metadata", {}).get("annotations") or {})
        wanted = self._wanted_annotations(attrs, notes)
        changed = {k: v for k, v in wanted.items() if notes.get(k) != v}
        if changed:
            log.info("annotating node %s: %s", self.node_name, ", ".join(sorted(changed)))
            await self._patch_status({"metadata": {"annotations": changed}})
        if self.set_network_unavailable and not _network_available(node):
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            await self._patch_status({"status": {"conditions": [{
                "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
                "message": "Flannel is running on this node", "lastTransitionTime": now, "lastHeartbeatTime": now}]}})
        public_ip = IPv4Address(wanted[self.names.public_ip]) if self.names.public_ip in wanted else attrs.public_ip
        public_ipv6 = IPv6Address(wanted[self.names.public_ipv6]) if self.names.public_ipv6 in wanted else attrs.public_ipv6
        final = LeaseAttrs(public_ip, public_ipv6, attrs.backend_type, attrs.backend_data, attrs.backend_v6_data)
        return Lease(key=self.node_name, subnet=subnet if config.enable_ipv4 else None,
                     ipv6_subnet=ipv6 if config.enable_ipv6 else None, attrs=final, node_name=self.node_name)

    def _wanted_annotations(self, attrs: LeaseAttrs, notes: dict[str, str]) -> dict[str, str]:
        n = self.names
        wanted = {n.managed: "true", n.backend_type: attrs.backend_type}
        if attrs.public_ip is not None:
            wanted[n.backend_data] = attrs.backend_data or "null"
            wanted[n.public_ip] = str(self._overwrite(notes, n.public_ip_overwrite, IPv4Address) or attrs.public_ip)
        if attrs.public_ipv6 is not None:
            wanted[n.backend_v6_data] = attrs.backend_v6_data or "null"
            wanted[n.public_ipv6] = str(self._overwrite(notes, n.public_ipv6_overwrite, IPv6Address)
                                        or attrs.public_ipv6)
        return wanted

    def _overwrite(self, notes: dict[str, str], key: str, cls: type[IPv4Address | IPv6Address]) -> object:
        """flannel's public-ip-overwrite annotation, parsed; an invalid one is refused by name (logged once
        per value) and the detected address is published instead, never the annotation verbatim."""
        try:
            return _address(self.node_name, notes, key, cls)
        except CorruptLease as exc:
            if self._reported.first((self.node_name, key), str(exc)):
                log.error("ignoring annotation %s on node %s: %s (PUBLIC_IP_OVERWRITE_INVALID)",
                          key, self.node_name, exc)
            return None

    async def restore_lease(self, config: NetworkConfig, lease: Lease, attrs: LeaseAttrs) -> Lease:
        """Our annotations back on our Node (acquiring patches exactly what differs)."""
        return await self.acquire_lease(config, attrs, (lease.subnet, lease.ipv6_subnet))

    async def renew_lease(self, config: NetworkConfig, lease: Lease) -> Lease | None:
        return lease  # Node objects do not expire

    async def state_at(self, config: NetworkConfig, revision: int) -> dict[str, Lease]:
        raise StateUnavailable("the Kubernetes API cannot list at an old resourceVersion")

    # ---- the reflector ----------------------------------------------------------------------

    async def run_watch(self, config: NetworkConfig, hub: LeaseHub) -> None:
        delay = self.retry_interval / 4
        while True:
            try:
                listing = await self._call("list nodes", lambda: self.api.list_node_without_preload_content(
                    _request_timeout=60))
                revision = _resource_version(listing, 0)
                items = listing.get("items") or []
                if not isinstance(items, list):
                    raise StoreUnavailable("list nodes answered items that are not a list")
                self.store_id = self._identity(items)
                hub.set_store(self.store_id)
                leases = {}
                for node in items:
                    lease = self._decode(config, node)
                    if lease is not None:
                        leases[lease.key] = lease
                hub.reset(leases, revision)
                delay = self.retry_interval / 4
                await self._watch(config, hub, revision)
            except _Expired as exc:
                log.info("node watch expired (%s); relisting", exc)
            except (StoreUnavailable, AcquireError) as exc:
                # 401/400/403 too: an operator can fix credentials or RBAC; never exit over them. The lease
                # stream stays NOT_SERVING until the first list succeeds.
                metrics.STORE_RECONNECTS.inc()
                if self._reported.first("<list nodes>", str(exc)):
                    log.warning("node list/watch failed: %s; retrying with back-off (up to %.0fs)", exc,
                                LIST_RETRY_MAX)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LIST_RETRY_MAX)

    def _identity(self, items: list[Any]) -> str:
        """Which cluster this is, for cursors: the API server's URL and the uid of this node's Node object.
        A uid is random per object, so a cursor of another cluster (or of a Node deleted and created again)
        never names this store; reading the kube-system namespace's uid would need RBAC flannel lacks."""
        uid = next((node["metadata"].get("uid") for node in items
                    if isinstance(node, dict) and _node_name(node) == self.node_name), None)
        return f"kube:{self.api_client.configuration.host}:{uid[:64] if isinstance(uid, str) and uid else '-'}"

    async def _watch(self, config: NetworkConfig, hub: LeaseHub, revision: int) -> None:
        """Watch from ``revision`` until a 410; resume from the last seen version after a drop."""
        delay = self.retry_interval / 4
        while True:
            watcher = kwatch.Watch(return_type="object")
            try:
                async for event in watcher.stream(self.api.list_node, resource_version=str(revision),
                                                  allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT,
                                                  _request_timeout=WATCH_TIMEOUT + 30):
                    if not isinstance(event, dict) or not isinstance(event.get("raw_object"), dict):
                        raise _BadFrame(f"a watch frame that is not a JSON event: {shorten(event)}")
                    kind, node = event["type"], event["raw_object"]
                    version = _resource_version(node, revision)
                    if kind == "BOOKMARK":
                        hub.progress(version)
                    elif kind in ("ADDED", "MODIFIED"):
                        change: Change = (node["metadata"]["name"], self._decode(config, node))
                        hub.apply([change], version)
                    elif kind == "DELETED":
                        hub.apply([(node["metadata"]["name"], None)], version)
                    revision = max(revision, version)
                    delay = self.retry_interval / 4
            except ApiException as exc:
                if exc.status == 410:
                    raise _Expired(str(exc.reason)) from exc
                metrics.STORE_RECONNECTS.inc()
                log.warning("node watch failed (%s %s); resuming from %d", exc.status, exc.reason, revision)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                metrics.STORE_RECONNECTS.inc()
                log.warning("node watch dropped (%s); resuming from %d", exc or type(exc).__name__, revision)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a frame we cannot read (bad JSON, bad shape, too long)
                # Resuming from the same version would read the same frame again: relist instead.
                metrics.STORE_RECONNECTS.inc()
                log.warning("node watch sent an unusable frame (%s: %s); relisting", type(exc).__name__,
                            shorten(str(exc)))
                await asyncio.sleep(delay)
                raise _Expired("unusable watch frame") from None
            finally:
                await watcher.close()


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _BadFrame(ValueError):
    """A watch frame that is not an event object."""


def _node_name(node: object) -> str:
    meta = node.get("metadata") if isinstance(node, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else "?"


def _resource_version(node: dict[str, Any], default: int) -> int:
    meta = node.get("metadata")
    text = meta.get("resourceVersion") if isinstance(meta, dict) else None
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 20:
        return int(text)
    if text in (None, ""):
        return default
    raise _BadFrame(f"resourceVersion {shorten(text)} is not a number")


def _api_error(what: str, status: int, body: bytes) -> Exception:
    try:
        message = shorten(decode_json(body, API_RESPONSE, "error").get("message", ""), 200)
    except (Rejected, AttributeError):
        message = shorten(body[:200].decode(errors="replace"), 200)
    if status == 403:
        return AccessDenied(
            f"Kubernetes API refused {what} (403 Forbidden): {message}. flannel's RBAC is needed: "
            "nodes get/list/watch and nodes/status patch (see deploy/kube-flannel-py.yml)")
    if status == 404:
        return StoreUnavailable(f"{what}: not found (404): {message}")
    if status >= 500 or status == 429:
        return StoreUnavailable(f"Kubernetes API error on {what} ({status}): {message}")
    return AcquireError(f"Kubernetes API rejected {what} ({status}): {message}")


def _address(node: str, notes: dict[str, str], key: str, cls: type[IPv4Address | IPv6Address]) -> IPv4Address | IPv6Address | None:
    raw = notes.get(key)
    if not raw:
        return None
    family = 4 if cls is IPv4Address else 6
    try:
        if not isinstance(raw, str) or len(raw) > 64 or not raw.isascii():
            raise ValueError(raw)
        return cls(raw)
    except ValueError:
        raise CorruptLease(f"node {label(node)}: annotation {key}={shorten(raw)} is not an IPv{family} address",
                           FIELD_INVALID) from None


def _json_object(node: str, notes: dict[str, str], key: str) -> str:
    raw = notes.get(key)
    if raw in (None, "", "null"):
        return ""
    if not isinstance(raw, str):
        raise CorruptLease(f"node {label(node)}: annotation {key} is not a string", FIELD_INVALID)
    try:
        value = decode_json(raw, ANNOTATION, f"node {label(node)}: annotation {key}")
    except Rejected as exc:
        raise CorruptLease(exc.message, exc.reason) from None
    return canonical_json(value)


def _network_available(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "NetworkUnavailable":
            return condition.get("status") == "False" and condition.get("reason") == "FlannelIsUp"
    return False
