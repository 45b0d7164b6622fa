"""The kernel of the current network namespace, read with ``ip -json`` / ``bridge -json`` (no privilege)."""

from __future__ import annotations

import json
import subprocess
from typing import Any, Protocol


class KernelReadError(Exception):
    """``ip`` or ``bridge`` could not be run or printed something that is not JSON."""


class KernelView(Protocol):
    """What the doctor reads of the kernel: a link, the routes to a subnet, a device's neighbours and FDB
    entries, each as ``ip -json`` / ``bridge -json`` prints them."""

    def link(self, device: str) -> dict[str, Any] | None: ...

    def routes(self, subnet: str) -> list[dict[str, Any]]: ...

    def neighbours(self, device: str) -> list[dict[str, Any]]: ...

    def fdb(self, device: str) -> list[dict[str, Any]]: ...


class Kernel:
    """Read-only views of links, routes, neighbours and FDB entries (a :class:`KernelView`)."""

    def _json(self, argv: list[str]) -> list[dict[str, Any]]:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KernelReadError(f"cannot run {' '.join(argv)}: {exc}") from exc
        if proc.returncode != 0:
            if "does not exist" in proc.stderr or "Cannot find device" in proc.stderr:
                return []
            raise KernelReadError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        text = proc.stdout.strip()
        if not text:
            return []
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KernelReadError(f"{' '.join(argv)} printed no JSON: {exc}") from exc
        return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []

    def link(self, device: str) -> dict[str, Any] | None:
        found = self._json(["ip", "-json", "link", "show", "dev", device])
        return found[0] if found else None

    def routes(self, subnet: str) -> list[dict[str, Any]]:
        family = "-6" if ":" in subnet else "-4"
        return self._json(["ip", family, "-json", "route", "show", subnet])

    def neighbours(self, device: str) -> list[dict[str, Any]]:
        return self._json(["ip", "-json", "neigh", "show", "dev", device])

    def fdb(self, device: str) -> list[dict[str, Any]]:
        return self._json(["bridge", "-json", "fdb", "show", "dev", device])
