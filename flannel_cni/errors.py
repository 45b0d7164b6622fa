"""CNI errors: the spec's well-known codes and the error object printed on stdout."""

from __future__ import annotations

import json
from typing import Any

# The CNI specification's well-known error codes (1-99 are reserved for the spec).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_LIMITED_CONNECTIVITY = 51
# Codes of this plugin (100 and up are the plugin's own).
SUBNET_CHANGED = 100
"""CHECK: the node's subnet is no longer the one the container's address came from."""
INTERNAL = 999
"""What libcni reports for a plugin that failed without an error object."""


class CniError(Exception):
    """A failure reported to the runtime as a CNI error object (``code``, ``msg``, ``details``)."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            reply["details"] = self.details
        return reply

    def dumps(self, cni_version: str) -> str:
        return json.dumps(self.to_json(cni_version))
