"""A small Kubernetes API server for Node objects, backed by a real etcd, for tests.

There is no kube-apiserver binary here; this one keeps the semantics the official client can see:

- discovery: ``/version``, ``/api``, ``/api/v1`` (nodes, nodes/status), ``/apis``, ``/healthz``;
- Nodes stored as JSON at ``<prefix>/minions/<name>``; ``metadata.resourceVersion`` is the etcd
  mod_revision, a NodeList's is the revision of the etcd read;
- list (``labelSelector``, ``fieldSelector=metadata.name=X``, pages with ``limit``/``continue`` at the
  first page's revision; an unknown token is 410 Expired), get, create (409 AlreadyExists), update
  (PUT; a ``resourceVersion`` precondition gives 409 Conflict), delete, patch (merge, strategic merge
  with ``status.conditions``/``status.addresses`` merged by ``type``, JSON patch), all with optimistic
  concurrency on etcd; a no-op update writes nothing and keeps the resourceVersion;
- the status subresource as the node strategy treats it: ``/status`` keeps ``.spec``, applies metadata
  and ``.status``; the main resource keeps ``.status``;
- watch from a resourceVersion (an etcd watch from RV+1; RV "0"/absent: synthetic ADDED for what exists,
  then from now), DELETED with the last state and the deletion's revision, BOOKMARKs about every second
  with ``allowWatchBookmarks`` (see below), the stream closed after ``timeoutSeconds``, and a compacted
  RV answered by one in-stream ``ERROR`` event (Status 410 Expired) as the watch cache does;
- errors as ``Status`` objects: 400, 403 (RBAC's wording), 404, 409, 415, 422.

Bookmarks carry a revision up to which every Node event has been sent, also when the cluster is idle:
while watches with bookmarks are open the server writes ``<prefix>/minions.bookmark`` (outside the Node
keys) about once a second and each watch turns that write, which etcd delivers in order after every
earlier event, into a BOOKMARK (a real cluster's revisions advance the same way through other objects).

Run it as its own process::

    python -m flannel_testkit.kubeapi --etcd-endpoint http://127.0.0.1:2379 --prefix /registry-x \\
        --listen 127.0.0.1:0

It prints ``listening on HOST:PORT`` once it accepts connections and stops on SIGTERM/SIGINT.

Test controls (only on this fake; never recorded in the request log):

- ``POST /_test/drop-watches``: abort every open watch connection (no clean end of the chunked body);
  answers ``{"dropped": N}``; ``?clean=1`` ends the streams cleanly instead, as ``timeoutSeconds`` does;
- ``POST /_test/compact``: write the marker key twice and compact etcd there, so that every
  resourceVersion handed out before is too old; answers ``{"revision": R}``;
- ``POST /_test/deny`` ``{"verb": "patch", "resource": "nodes/status"}`` (``"*"`` for any verb; ``"code"``
  401 or 400 answers that status instead of 403) and ``POST /_test/allow-all``;
- ``POST /_test/inject-frame`` with any bytes: written as they are (plus a newline) into every open watch
  stream, e.g. a frame that is not JSON; answers ``{"injected": N}``;
- ``GET /_test/requests``: ``[{"method", "path", "query", "content_type", "body"}, ...]`` of every API
  request so far; ``POST /_test/clear-requests`` empties it.

How ``kubernetes.aio`` surfaces things (kubernetes 37.0.2): an ERROR event becomes
``ApiException(status=410, reason="Expired: too old resource version: ...")`` raised by the watch
iterator (without ``timeout_seconds`` it first retries once with the same resourceVersion); a dropped
watch raises ``aiohttp.ClientPayloadError`` from the iterator; ``patch_node_status(name, dict)`` without
``_content_type`` sends ``application/json-patch+json`` with an object body, which this server (like the
real one) refuses with 400.
"""

from __future__ import annotations

from flannel_testkit.kubeapi.control import AsyncKubeApiControl, KubeApiControl, KubeApiError
from flannel_testkit.kubeapi.nodes import JSON, make_node
from flannel_testkit.kubeapi.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from flannel_testkit.kubeapi.process import KubeApiProcess, running
from flannel_testkit.kubeapi.server import KubeApiServer

# What the tests, the cluster harness and the benchmarks use; the rest from its module.
__all__ = [
    "JSON",
    "JSON_PATCH",
    "MERGE_PATCH",
    "AsyncKubeApiControl",
    "KubeApiControl",
    "KubeApiError",
    "KubeApiProcess",
    "KubeApiServer",
    "json_patch",
    "make_node",
    "merge_patch",
    "running",
    "strategic_merge_patch",
]
