"""Running a delegate plugin as a CNI runtime would: found by its ``type`` in ``CNI_PATH``, the
environment passed on with ``CNI_COMMAND`` set, the config on stdin; its error object passed back."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flannel_cni.errors import INTERNAL, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, IO_FAILURE, CniError

MAX_OUTPUT_BYTES = 1 << 20


def find_plugin(plugin_type: str, cni_path: str) -> Path:
    """The executable for ``plugin_type`` in the ``:``-separated ``cni_path``."""
    if not plugin_type or "/" in plugin_type or plugin_type in (".", "..") or "\0" in plugin_type:
        raise CniError(
            INVALID_NETWORK_CONFIG, f"plugin type {plugin_type!r} is not a plain executable name"[:300]
        )
    for directory in cni_path.split(":"):
        if directory:
            candidate = Path(directory) / plugin_type
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    raise CniError(
        INVALID_ENVIRONMENT, f"failed to find plugin {plugin_type!r} in CNI_PATH {cni_path!r}"[:400]
    )


def run_plugin(command: str, config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any] | None:
    """``CNI_COMMAND=command`` for the plugin named by ``config["type"]``; its parsed stdout (a result on
    ADD, usually nothing otherwise). Its stderr goes to ours; its failure is raised with its code."""
    plugin_type = str(config.get("type", ""))
    plugin = find_plugin(plugin_type, env.get("CNI_PATH", ""))
    child_env = {**env, "CNI_COMMAND": command}
    try:
        proc = subprocess.run(
            [str(plugin)],
            input=json.dumps(config, sort_keys=True).encode(),
            env=child_env,
            stdout=subprocess.PIPE,
            check=False,
        )
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot run delegate {plugin}: {exc.strerror}") from None
    out = proc.stdout[:MAX_OUTPUT_BYTES].strip()
    try:
        reply = json.loads(out) if out else None
    except ValueError:
        reply = None
        if proc.returncode == 0:
            raise CniError(
                INTERNAL, f"delegate {plugin_type} {command}: output is not JSON: {out[:200]!r}"
            ) from None
    if proc.returncode != 0:
        if isinstance(reply, dict) and isinstance(reply.get("code"), int):
            raise CniError(
                int(reply["code"]),
                f"delegate {plugin_type} {command}: {reply.get('msg', '')}",
                str(reply.get("details", "")),
            )
        raise CniError(
            INTERNAL,
            f"delegate {plugin_type} {command} failed (exit {proc.returncode}) "
            f"with no error object: {out[:200]!r}",
        )
    if reply is not None and not isinstance(reply, dict):
        raise CniError(
            INTERNAL, f"delegate {plugin_type} {command}: expected a JSON object, got {out[:200]!r}"
        )
    return reply
