"""The plugin's own network config (stdin), parsed once into a typed value.

Fields as flannel's cni-plugin reads them: the standard ``cniVersion``, ``name``, ``type``, plus
``subnetFile`` (default ``/run/flannel/subnet.env``), ``dataDir`` (default ``/var/lib/cni/flannel``),
``delegate`` and ``ipam`` (objects handed on), ``runtimeConfig`` (copied into the delegate) and
``prevResult`` (CHECK). Unknown fields are ignored, as Go's decoder does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flannel_cni import LATEST_VERSION, SUPPORTED_VERSIONS
from flannel_cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG, CniError

DEFAULT_SUBNET_FILE = Path("/run/flannel/subnet.env")
DEFAULT_DATA_DIR = Path("/var/lib/cni/flannel")
MAX_CONFIG_BYTES = 1 << 20
"""A network config larger than this is refused before it is decoded."""


@dataclass(frozen=True)
class NetConf:
    """The plugin's config. ``delegate``/``ipam``/``runtime_config`` stay JSON objects: they are handed
    on to other plugins, which own their meaning."""

    cni_version: str
    name: str
    subnet_file: Path = DEFAULT_SUBNET_FILE
    data_dir: Path = DEFAULT_DATA_DIR
    delegate: dict[str, Any] | None = None
    ipam: dict[str, Any] | None = None
    runtime_config: dict[str, Any] | None = None
    prev_result: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def reply_version(self) -> str:
        """The version to answer in: the config's, when it is one this plugin speaks."""
        return self.cni_version if self.cni_version in SUPPORTED_VERSIONS else LATEST_VERSION


def decode_json(data: bytes, what: str) -> Any:
    """JSON with limits: size first, then depth and digit limits as Python's decoder enforces them."""
    if len(data) > MAX_CONFIG_BYTES:
        raise CniError(
            DECODE_FAILURE, f"{what}: {len(data)} bytes, more than the {MAX_CONFIG_BYTES} accepted"
        )
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CniError(DECODE_FAILURE, f"{what}: not valid JSON: {str(exc)[:200]}") from None


def _object(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CniError(
            INVALID_NETWORK_CONFIG, f"network config: {key!r} must be an object, got {type(value).__name__}"
        )
    return value


def _string(raw: dict[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise CniError(
            INVALID_NETWORK_CONFIG, f"network config: {key!r} must be a string, got {value!r}"[:300]
        )
    return value


def _path(raw: dict[str, Any], key: str, default: Path) -> Path:
    text = _string(raw, key)
    if not text:
        return default
    if "\0" in text:
        raise CniError(INVALID_NETWORK_CONFIG, f"network config: {key!r} holds a NUL byte")
    return Path(text)


def parse_netconf(data: bytes) -> NetConf:
    """The network config from stdin, or a CNI error naming what is wrong."""
    raw = decode_json(data, "network config")
    if not isinstance(raw, dict):
        raise CniError(DECODE_FAILURE, f"network config: expected a JSON object, got {type(raw).__name__}")
    version = _string(raw, "cniVersion")
    if version and version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    return NetConf(
        cni_version=version,
        name=_string(raw, "name"),
        subnet_file=_path(raw, "subnetFile", DEFAULT_SUBNET_FILE),
        data_dir=_path(raw, "dataDir", DEFAULT_DATA_DIR),
        delegate=_object(raw, "delegate"),
        ipam=_object(raw, "ipam"),
        runtime_config=_object(raw, "runtimeConfig"),
        prev_result=_object(raw, "prevResult"),
        raw=raw,
    )
