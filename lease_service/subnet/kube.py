"""Subnet manager on the Kubernetes API: leases are Node objects.

A node's subnet is its ``spec.podCIDR`` (``spec.podCIDRs`` for dual stack); its flannel attributes
are annotations under a prefix (default ``flannel.alpha.coreos.com``), written the way flannel writes
them: one strategic-merge patch on ``nodes/<name>/status``, only when something changed, so that
kube-flannel.yml's RBAC (nodes get/list/watch, nodes/status patch) is all we need. Other nodes arrive
through our own reflector: list (in pages), then watch from the list's resourceVersion with bookmarks and
a server timeout, resume from the last resourceVersion after a dropped stream, and relist + diff on 410.
The API is spoken over raw HTTP (``kube_api``): each Node is decoded into the few fields a lease needs,
and an event whose lease fields did not change (a kubelet heartbeat) is dropped before anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_network
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from flannel_rpc import ipv4, vxlan_data
from flannel_rpc.logs import LogOnce, label, shorten
from flannel_rpc.untrusted import ANNOTATION, Rejected, decode_json
from lease_service import metrics
from lease_service.lease import (
    FIELD_INVALID,
    MAX_BACKEND_TYPE,
    CorruptLease,
    Lease,
    LeaseAttrs,
    SubnetPair,
    canonical_json,
    check_against_config,
    parse_address,
)
from lease_service.netconfig import AddressT, ConfigError, NetworkConfig, parse_network_config
from lease_service.subnet.base import (
    AccessDenied,
    AcquireError,
    Change,
    Known,
    LeaseSink,
    StateUnavailable,
    StoreUnavailable,
)
from lease_service.subnet.kube_api import EVENT_DECODER, ApiStatus, KubeApi, NodeView, view_of

log = logging.getLogger(__name__)

DEFAULT_ANNOTATION_PREFIX = "flannel.alpha.coreos.com"
DEFAULT_NET_CONFIG_PATH = Path("/etc/kube-flannel/net-conf.json")
WATCH_TIMEOUT = 300  # seconds the server keeps one watch open
PROGRESS_EVERY = 1.0  # seconds between the hub's revision moves for events that change no lease
STRATEGIC = "application/strategic-merge-patch+json"
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
        return cls(
            *(
                full + name
                for name in (
                    "kube-subnet-manager",
                    "backend-data",
                    "backend-v6-data",
                    "backend-type",
                    "public-ip",
                    "public-ipv6",
                    "node-public-ip",
                    "node-public-ipv6",
                    "public-ip-overwrite",
                    "public-ipv6-overwrite",
                )
            )
        )


def pod_cidrs(node: NodeView | dict[str, Any]) -> SubnetPair:
    """The node's IPv4 and IPv6 pod CIDRs; raises CorruptLease naming the node."""
    if isinstance(node, dict):
        node = view_of(node)
    name = node.metadata.name
    raw = node.spec.podCIDRs or ((node.spec.podCIDR,) if node.spec.podCIDR else ())
    if len(raw) > 2:
        raise CorruptLease(f"node {name}: spec.podCIDRs {list(raw)} must be one IPv4 and/or one IPv6 CIDR")
    v4 = v6 = None
    for text in raw:
        try:
            net = ipv4.cidr(text) or ip_network(text, strict=False)
        except (ValueError, TypeError) as exc:
            raise CorruptLease(f"node {name}: pod CIDR {text!r} is not a CIDR") from exc
        if isinstance(net, IPv4Network):
            v4 = net
        else:
            v6 = net
    return v4, v6


class KubeSubnetManager:
    """flannel's kube subnet manager over the Kubernetes API (``kube_api``)."""

    def __init__(
        self,
        api: KubeApi,
        node_name: str,
        net_config_path: Path = DEFAULT_NET_CONFIG_PATH,
        annotation_prefix: str = DEFAULT_ANNOTATION_PREFIX,
        set_network_unavailable: bool = True,
        retry_interval: float = 2.0,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.net_config_path = net_config_path
        self.names = Annotations.for_prefix(annotation_prefix)
        self._prefix = self.names.managed[: -len("kube-subnet-manager")]
        self.set_network_unavailable = set_network_unavailable
        self.retry_interval = retry_interval
        self.store_id = f"kube:{api.server}"
        self.skipped_nodes = 0
        self._reported = LogOnce()
        # per node name, what its lease was made of (pod CIDRs and our annotations): an event that
        # leaves these alone (a kubelet heartbeat) is dropped without decoding a lease
        self._seen: dict[str, bytes] = {}

    async def close(self) -> None:
        await self.api.close()

    # ---- config -----------------------------------------------------------------------------

    async def get_network_config(self) -> NetworkConfig:
        try:
            text = await asyncio.to_thread(self.net_config_path.read_bytes)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the network config {self.net_config_path}: {exc.strerror}"
            ) from exc
        return parse_network_config(text, source=str(self.net_config_path))

    # ---- calls ------------------------------------------------------------------------------

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One API call; errors become StoreUnavailable/AccessDenied/AcquireError naming ``what``."""
        try:
            return await call()
        except ApiStatus as exc:
            raise _api_error(what, exc.status, exc.message) from None
        except (TimeoutError, OSError) as exc:
            raise StoreUnavailable(
                f"Kubernetes API unreachable ({what}): {exc or type(exc).__name__}"
            ) from exc
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreUnavailable(
                f"Kubernetes API answered {what} with unusable JSON: {str(exc)[:200]}"
            ) from None

    async def get_node(self, name: str) -> dict[str, Any]:
        return await self._call(f"get node {name}", lambda: self.api.get_node(name))

    async def pod_node_name(self, namespace: str, pod: str) -> str:
        """The node a pod runs on (``spec.nodeName``; "" while it is not scheduled)."""
        doc = await self._call(
            f"get pod {namespace}/{pod}",
            lambda: self.api.get_json(f"/api/v1/namespaces/{namespace}/pods/{pod}"),
        )
        name = (doc.get("spec") or {}).get("nodeName")
        return name if isinstance(name, str) else ""

    async def _patch_status(self, patch: dict[str, Any]) -> None:
        await self._call(
            f"patch nodes/{self.node_name}/status",
            lambda: self.api.patch_node_status(self.node_name, patch, STRATEGIC),
        )

    # ---- leases -----------------------------------------------------------------------------

    def node_to_lease(self, config: NetworkConfig, node: NodeView | dict[str, Any]) -> Lease | None:
        """The node's lease; None when it is not managed by a kube subnet manager.
        Raises CorruptLease naming the node when it is managed but unusable."""
        if isinstance(node, dict):
            node = view_of(node)
        name = node.metadata.name
        notes = node.metadata.annotations or {}
        if notes.get(self.names.managed) != "true":
            return None
        subnet, ipv6 = pod_cidrs(node)
        if config.enable_ipv4 and subnet is None:
            raise CorruptLease(f"node {name}: no IPv4 pod CIDR (spec.podCIDR) yet")
        public_ip = _address(name, notes, self.names.public_ip, IPv4Address) if config.enable_ipv4 else None
        public_ipv6 = (
            _address(name, notes, self.names.public_ipv6, IPv6Address) if config.enable_ipv6 else None
        )
        if config.enable_ipv4 and public_ip is None:
            raise CorruptLease(f"node {name}: annotation {self.names.public_ip} is missing")
        backend_type = notes.get(self.names.backend_type, "")
        if not isinstance(backend_type, str) or len(backend_type) > MAX_BACKEND_TYPE:
            raise CorruptLease(
                f"node {label(name)}: annotation {self.names.backend_type}={shorten(backend_type)} "
                "is not a backend type",
                FIELD_INVALID,
            )
        attrs = LeaseAttrs(
            public_ip=public_ip,
            public_ipv6=public_ipv6,
            backend_type=backend_type,
            backend_data=_json_object(name, notes, self.names.backend_data),
            backend_v6_data=_json_object(name, notes, self.names.backend_v6_data),
        )
        lease = Lease(
            key=name,
            subnet=subnet if config.enable_ipv4 else None,
            ipv6_subnet=ipv6 if config.enable_ipv6 else None,
            attrs=attrs,
            node_name=name,
        )
        check_against_config(lease, config)
        return lease

    def _signature(self, node: NodeView) -> bytes:
        """A 128-bit digest of what a node's lease is made of: its pod CIDRs and the annotations under our
        prefix (a digest rather than the fields: 5,000 nodes' worth of tuples took 5 MB)."""
        notes = node.metadata.annotations or {}
        prefix = self._prefix
        parts = [node.spec.podCIDR, *node.spec.podCIDRs]
        parts += sorted(f"{k}={v}" for k, v in notes.items() if k.startswith(prefix))
        return hashlib.blake2b("\0".join(parts).encode(errors="surrogatepass"), digest_size=16).digest()

    def _decode(self, config: NetworkConfig, node: NodeView | dict[str, Any]) -> Lease | None:
        """The node's lease, or None (not ours to stream, or rejected: logged once per change of it)."""
        name = (
            node.metadata.name
            if isinstance(node, NodeView)
            else str((node.get("metadata") or {}).get("name"))
        )
        try:
            lease = self.node_to_lease(config, node)
        except CorruptLease as exc:
            reason, message = exc.reason, str(exc)
        except (
            msgspec.ValidationError,
            TypeError,
            ValueError,
        ) as exc:  # any shape of Node: a named rejection
            reason, message = "MALFORMED", f"node {label(name)}: unusable object ({type(exc).__name__})"
        else:
            self._reported.forget(name)
            return lease
        if self._reported.first(name, (reason, message)):
            self.skipped_nodes += 1
            metrics.CORRUPT_LEASES.inc()
            log.warning("skipping node %s: %s (%s)", label(name), message, reason)
        return None

    def _is_new(self, node: NodeView) -> bool:
        """Whether a Node's lease fields differ from what was last seen of it (and note them)."""
        name = node.metadata.name
        signature = self._signature(node)
        if self._seen.get(name) == signature:
            return False
        self._seen[name] = signature
        return True

    def _changed(self, config: NetworkConfig, node: NodeView) -> Change | None:
        """The change a Node's new state makes; None when its lease fields are what they were."""
        return (node.metadata.name, self._decode(config, node)) if self._is_new(node) else None

    async def stored_public_ips(self) -> tuple[IPv4Address | None, IPv6Address | None]:
        """flannel reads node-public-ip(v6) annotations at start as the public IP."""
        try:
            node = await self.get_node(self.node_name)
        except NotFound:  # not registered yet: no annotations to read (flannel carries on as well)
            return None, None
        notes = (node.get("metadata") or {}).get("annotations") or {}
        return (
            _address(self.node_name, notes, self.names.node_public_ip, IPv4Address),
            _address(self.node_name, notes, self.names.node_public_ipv6, IPv6Address),
        )

    async def acquire_lease(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous: SubnetPair,
        known: Known | None = None,
    ) -> Lease:
        waited_for = ""
        while True:
            try:
                node = await self.get_node(self.node_name)
                subnet, ipv6 = pod_cidrs(node)
            except (StoreUnavailable, CorruptLease) as exc:
                reason = str(exc)
            else:
                if (config.enable_ipv4 and subnet is None) or (
                    config.enable_ipv6 and ipv6 is None and not config.enable_ipv4
                ):
                    reason = f"node {self.node_name} has no pod CIDR yet (spec.podCIDR is empty)"
                else:
                    break
            if reason != waited_for:
                log.warning("waiting to acquire a lease: %s", reason)
                waited_for = reason
            await asyncio.sleep(self.retry_interval)
        for family, net, network in (("IPv4", subnet, config.network), ("IPv6", ipv6, config.ipv6_network)):
            if (
                net is not None
                and network is not None
                and not (net.network_address in network and net.broadcast_address in network)
            ):
                raise AcquireError(
                    f"node {self.node_name}: {family} pod CIDR {net} is outside the network {network}"
                )
        notes = dict(node.get("metadata", {}).get("annotations") or {})
        wanted = self._wanted_annotations(attrs, notes)
        changed = {k: v for k, v in wanted.items() if notes.get(k) != v}
        # One patch for the annotations and the condition (flannel sends two): the status subresource takes
        # both, and the backend waits for this lease before it programs anything.
        patch: dict[str, Any] = {}
        if changed:
            log.info("annotating node %s: %s", self.node_name, ", ".join(sorted(changed)))
            patch["metadata"] = {"annotations": changed}
        if self.set_network_unavailable and not _network_available(node):
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            patch["status"] = {
                "conditions": [
                    {
                        "type": "NetworkUnavailable",
                        "status": "False",
                        "reason": "FlannelIsUp",
                        "message": "Flannel is running on this node",
                        "lastTransitionTime": now,
                        "lastHeartbeatTime": now,
                    }
                ]
            }
        if patch:
            await self._patch_status(patch)
        public_ip = (
            IPv4Address(wanted[self.names.public_ip]) if self.names.public_ip in wanted else attrs.public_ip
        )
        public_ipv6 = (
            IPv6Address(wanted[self.names.public_ipv6])
            if self.names.public_ipv6 in wanted
            else attrs.public_ipv6
        )
        final = LeaseAttrs(
            public_ip, public_ipv6, attrs.backend_type, attrs.backend_data, attrs.backend_v6_data
        )
        return Lease(
            key=self.node_name,
            subnet=subnet if config.enable_ipv4 else None,
            ipv6_subnet=ipv6 if config.enable_ipv6 else None,
            attrs=final,
            node_name=self.node_name,
        )

    def _wanted_annotations(self, attrs: LeaseAttrs, notes: dict[str, str]) -> dict[str, str]:
        n = self.names
        wanted = {n.managed: "true", n.backend_type: attrs.backend_type}
        if attrs.public_ip is not None:
            wanted[n.backend_data] = attrs.backend_data or "null"
            wanted[n.public_ip] = str(
                self._overwrite(notes, n.public_ip_overwrite, IPv4Address) or attrs.public_ip
            )
        if attrs.public_ipv6 is not None:
            wanted[n.backend_v6_data] = attrs.backend_v6_data or "null"
            wanted[n.public_ipv6] = str(
                self._overwrite(notes, n.public_ipv6_overwrite, IPv6Address) or attrs.public_ipv6
            )
        return wanted

    def _overwrite(self, notes: dict[str, str], key: str, cls: type[AddressT]) -> AddressT | None:
        """flannel's public-ip-overwrite annotation, parsed; an invalid one is refused by name (logged once
        per value) and the detected address is published instead, never the annotation verbatim."""
        try:
            return _address(self.node_name, notes, key, cls)
        except CorruptLease as exc:
            if self._reported.first((self.node_name, key), str(exc)):
                log.error(
                    "ignoring annotation %s on node %s: %s (PUBLIC_IP_OVERWRITE_INVALID)",
                    key,
                    self.node_name,
                    exc,
                )
            return None

    async def restore_lease(self, config: NetworkConfig, lease: Lease, attrs: LeaseAttrs) -> Lease:
        """Our annotations back on our Node (acquiring patches exactly what differs)."""
        return await self.acquire_lease(config, attrs, (lease.subnet, lease.ipv6_subnet))

    async def renew_lease(self, config: NetworkConfig, lease: Lease) -> Lease | None:
        return lease  # Node objects do not expire

    async def state_at(
        self, config: NetworkConfig, revision: int, keep: Callable[[Lease], T]
    ) -> dict[str, T]:
        raise StateUnavailable("the Kubernetes API cannot list at an old resourceVersion")

    # ---- the reflector ----------------------------------------------------------------------

    async def run_watch(self, config: NetworkConfig, hub: LeaseSink) -> None:
        delay = self.retry_interval / 4
        while True:
            try:
                revision = await self._list(config, hub)
                delay = self.retry_interval / 4
                await self._watch(config, hub, revision)
            except _Expired as exc:
                log.info("node watch expired (%s); relisting", exc)
            except (StoreUnavailable, AcquireError) as exc:
                # 401/400/403 too: credentials or RBAC can be fixed; the stream stays NOT_SERVING meanwhile
                metrics.STORE_RECONNECTS.inc()
                if self._reported.first("<list nodes>", str(exc)):
                    log.warning("node list/watch failed: %s; retrying with back-off (up to 10s)", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _list(self, config: NetworkConfig, hub: LeaseSink) -> int:
        """List every Node (page by page), each lease handed to the hub as its page is decoded
        (``hub.listed``: the manager never holds the listing); the list's resourceVersion."""
        seen: dict[str, bytes] = {}
        revision = 0
        uid = ""
        hub.discard_listed()  # what an earlier, failed listing handed on
        async with contextlib.aclosing(self.api.list_nodes()) as pages:
            while True:
                page = await self._call("list nodes", lambda: anext(pages, None))
                if page is None:
                    break
                if not revision:
                    try:
                        revision = _version(page.metadata.resourceVersion, 0)
                    except ValueError as exc:
                        raise StoreUnavailable(f"list nodes: {exc}") from None
                for node in page.items:
                    if node.metadata.name == self.node_name:
                        uid = node.metadata.uid
                    seen[node.metadata.name] = self._signature(node)
                    lease = self._decode(config, node)
                    if lease is not None:
                        hub.listed(lease.key, lease)
        self._seen = seen
        # Which cluster this is, for cursors: the API server's URL and the uid of this node's Node object.
        # A uid is random per object, so a cursor of another cluster (or of a Node deleted and created
        # again) never names this store; the kube-system namespace's uid would need RBAC flannel lacks.
        self.store_id = f"kube:{self.api.server}:{uid[:64] or '-'}"
        hub.set_store(self.store_id)
        hub.reset({}, revision)
        return revision

    async def _watch(self, config: NetworkConfig, hub: LeaseSink, revision: int) -> None:
        """Watch from ``revision`` until a 410; resume from the last seen version after a drop. Each event is
        looked at in the watch's reader thread (``_pick``): only what changes a lease reaches the loop."""
        delay = self.retry_interval / 4
        reached = _Reached(revision)

        def pick(line: bytes | bytearray) -> _Seen | None:
            return self._pick(line, reached)

        def deliver(items: list[_Seen]) -> None:
            nonlocal delay
            for item in items:
                if item.name is None:
                    hub.progress(item.version)
                else:
                    lease = None if item.node is None else self._decode(config, item.node)
                    hub.apply([(item.name, lease)], item.version)
            delay = self.retry_interval / 4

        while True:
            try:
                await self.api.watch_nodes(reached.version, WATCH_TIMEOUT, pick, deliver)
                # the server's timeout ended the stream: watch again from where we are
            except ApiStatus as exc:
                if exc.status == 410:
                    raise _Expired(exc.message) from None
                metrics.STORE_RECONNECTS.inc()
                log.warning(
                    "node watch failed (%s %s); resuming from %d", exc.status, exc.message, reached.version
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except (TimeoutError, OSError) as exc:
                metrics.STORE_RECONNECTS.inc()
                log.warning(
                    "node watch dropped (%s); resuming from %d", exc or type(exc).__name__, reached.version
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                # resuming from the same version would read the same frame again: relist instead
                metrics.STORE_RECONNECTS.inc()
                log.warning("node watch sent an unusable frame (%s); relisting", str(exc)[:200])
                await asyncio.sleep(delay)
                raise _Expired("unusable watch frame") from None
            finally:
                hub.progress(reached.version)  # what the thread did not tell the hub yet

    def _pick(self, line: bytes | bytearray, reached: _Reached) -> _Seen | None:
        """One watch event, in the watch's reader thread: what the hub must hear of it (None: nothing now).
        An event that changes no lease moves the hub's revision at most once a second (a BOOKMARK at once):
        the hub's cursors stay fresh without a wake of the event loop per heartbeat."""
        event = EVENT_DECODER.decode(line)
        kind, obj = event.type, event.object
        if kind == "ERROR":
            if obj.code == 410:
                raise _Expired(f"{obj.reason}: {obj.message}")
            raise ApiStatus(obj.code or 500, msgspec.json.encode({"message": obj.message}))
        version = _version(obj.metadata.resourceVersion, reached.version)
        reached.version = max(reached.version, version)
        if kind in ("ADDED", "MODIFIED"):
            node = obj.node()
            if self._is_new(node):
                reached.told = time.monotonic()
                return _Seen(version, node.metadata.name, node)
        elif kind == "DELETED":
            self._seen.pop(obj.metadata.name, None)
            reached.told = time.monotonic()
            return _Seen(version, obj.metadata.name)
        now = time.monotonic()
        if kind == "BOOKMARK" or now - reached.told >= PROGRESS_EVERY:
            reached.told = now
            return _Seen(version)
        return None


@dataclass(slots=True)
class _Reached:
    """A watch's reader thread's notes: the resourceVersion reached, and when the hub last heard of one."""

    version: int
    told: float = 0.0


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a watch event tells the hub: a Node's new state (``node``), its removal (``name`` alone), or only
    the version reached (neither)."""

    version: int
    name: str | None = None
    node: NodeView | None = None


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class NotFound(StoreUnavailable):
    """The object is not there (404): retried where it must appear, ignored where it may be absent."""


def _version(text: str, default: int) -> int:
    """A resourceVersion as a number (they are etcd revisions); raises ValueError for anything else."""
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise ValueError(f"resourceVersion {text[:40]!r} is not a number")
    return int(text)


def _api_error(what: str, status: int, message: str) -> Exception:
    message = message[:200]
    if status == 403:
        return AccessDenied(
            f"Kubernetes API refused {what} (403 Forbidden): {message}. flannel's RBAC is needed: "
            "nodes get/list/watch and nodes/status patch (see deploy/kube-flannel-py.yml)"
        )
    if status == 410:
        return StoreUnavailable(f"{what}: expired (410): {message}")
    if status == 404:
        return NotFound(f"{what}: not found (404): {message}")
    if status >= 500 or status == 429:
        return StoreUnavailable(f"Kubernetes API error on {what} ({status}): {message}")
    return AcquireError(f"Kubernetes API rejected {what} ({status}): {message}")


def _address(node: str, notes: dict[str, str], key: str, cls: type[AddressT]) -> AddressT | None:
    raw = notes.get(key)
    if not raw:
        return None
    return parse_address(raw, cls, lambda: f"node {label(node)}: annotation {key}={shorten(raw)}")


def _json_object(node: str, notes: dict[str, str], key: str) -> str:
    raw = notes.get(key)
    if raw in (None, "", "null"):
        return ""
    if not isinstance(raw, str):
        raise CorruptLease(f"node {label(node)}: annotation {key} is not a string", FIELD_INVALID)
    vxlan = vxlan_data.fields(raw)
    if vxlan is not None:  # exactly {"VNI": n, "VtepMAC": mac}: its canonical text without the JSON codec
        return f'{{"VNI":{vxlan[0]},"VtepMAC":"{vxlan[1]}"}}'
    try:
        value = decode_json(raw, ANNOTATION, f"node {label(node)}: annotation {key}")
    except Rejected as exc:
        raise CorruptLease(exc.message, exc.reason) from None
    return canonical_json(value)


def _network_available(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "NetworkUnavailable":
            return bool(condition.get("status") == "False" and condition.get("reason") == "FlannelIsUp")
    return False
