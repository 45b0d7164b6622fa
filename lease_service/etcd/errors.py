"""The errors of the etcd client.

::

    EtcdError                 any failure; the message names the endpoint and the key
    ├── EtcdUnavailable       no endpoint answered within the call's retry budget
    └── WatchCompacted        a watch's start revision was compacted: list again, then watch
"""

from __future__ import annotations


class EtcdError(Exception):
    """An etcd call failed; ``code`` is the gRPC status name (e.g. ``"INVALID_ARGUMENT"``) when
    etcd answered with one, ``endpoint`` the endpoint that answered or failed last."""

    def __init__(self, message: str, *, endpoint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered within the deadline and its retries (etcd down, unreachable, no leader)."""


class WatchCompacted(EtcdError):
    """The watch cannot resume: etcd compacted the history up to ``compact_revision``.

    The caller must list the prefix again (``get_prefix``) and watch from that listing's revision + 1.
    """

    def __init__(self, message: str, *, compact_revision: int, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint, code=None)
        self.compact_revision = compact_revision
