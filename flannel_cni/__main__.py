"""``flannel-cni``: the CNI commands (ADD, DEL, CHECK, VERSION, STATUS, GC), driven by the environment
a CNI runtime sets and the network config on stdin. Every failure is a CNI error object on stdout and
exit status 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

from flannel_cni import LATEST_VERSION, PLUGIN_VERSION, SUPPORTED_VERSIONS, scratch
from flannel_cni.delegate import delegate_config
from flannel_cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    NOT_AVAILABLE,
    SUBNET_CHANGED,
    UNKNOWN_CONTAINER,
    CniError,
)
from flannel_cni.invoke import find_plugin, run_plugin
from flannel_cni.netconf import MAX_CONFIG_BYTES, NetConf, decode_json, parse_netconf
from flannel_cni.subnetenv import load_subnet_env

ABOUT = f"CNI plugin flannel-cni version {PLUGIN_VERSION} (flannel-py; flannel's cni-plugin for Python hosts)"
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": (),
    "GC": (),
}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class CniArgs:
    """The runtime's environment for one call, validated."""

    command: str
    container_id: str
    netns: str
    ifname: str
    path: str
    env: Mapping[str, str]


def parse_env(env: Mapping[str, str]) -> CniArgs:
    command = env.get("CNI_COMMAND", "")
    if command not in _REQUIRED and command != "VERSION":
        raise CniError(
            INVALID_ENVIRONMENT,
            f"unknown CNI_COMMAND {command[:40]!r}: expected one of ADD, DEL, CHECK, VERSION, STATUS, GC",
        )
    missing = [name for name in _REQUIRED.get(command, ()) if not env.get(name)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"required environment variables missing: {', '.join(missing)}")
    container_id, ifname = env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", "")
    if container_id and not _CONTAINER_ID.fullmatch(container_id):
        raise CniError(
            INVALID_ENVIRONMENT,
            "invalid CNI_CONTAINERID: expected a letter or digit, then letters, "
            "digits, '_', '.', '-' (at most 255)",
            container_id[:300],
        )
    if ifname and (
        len(ifname) > 15
        or ifname in (".", "..")
        or any(c in ifname for c in "/:")
        or any(c.isspace() for c in ifname)
        or "\0" in ifname
    ):
        raise CniError(
            INVALID_ENVIRONMENT,
            "invalid CNI_IFNAME: at most 15 characters, no '/', ':' or spaces",
            ifname[:300],
        )
    return CniArgs(command, container_id, env.get("CNI_NETNS", ""), ifname, env.get("CNI_PATH", ""), env)


def cmd_add(args: CniArgs, conf: NetConf) -> dict[str, Any] | None:
    env = load_subnet_env(conf.subnet_file)
    delegate = delegate_config(conf, env)
    # Saved before the delegate runs: a runtime DELs after a failed ADD, and that DEL needs it.
    scratch.save(conf.data_dir, args.container_id, json.dumps(delegate, sort_keys=True).encode())
    return run_plugin("ADD", delegate, args.env)


def _saved(args: CniArgs, conf: NetConf) -> dict[str, Any] | None:
    data = scratch.load(conf.data_dir, args.container_id, MAX_CONFIG_BYTES)
    if data is None:
        return None
    saved = decode_json(data, f"saved delegate config {conf.data_dir / args.container_id}")
    if not isinstance(saved, dict):
        raise CniError(
            DECODE_FAILURE, f"saved delegate config {conf.data_dir / args.container_id} is not an object"
        )
    return saved


def cmd_del(args: CniArgs, conf: NetConf) -> None:
    try:
        saved = _saved(args, conf)
    except CniError as exc:
        if exc.code != DECODE_FAILURE:
            raise
        # As flannel: an unreadable saved config cannot be delegated; say so, succeed, drop it.
        print(f"flannel-cni: DEL {args.container_id}: {exc.msg}; nothing to delegate", file=sys.stderr)
        scratch.remove(conf.data_dir, args.container_id)
        return
    if saved is None:
        return  # never added, or already deleted: DEL is idempotent
    run_plugin("DEL", saved, args.env)
    scratch.remove(conf.data_dir, args.container_id)


def cmd_check(args: CniArgs, conf: NetConf) -> None:
    if conf.cni_version and _version_tuple(conf.cni_version) < (0, 4, 0):
        raise CniError(
            INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, the config has {conf.cni_version}"
        )
    if conf.prev_result is None:
        raise CniError(INVALID_NETWORK_CONFIG, "CHECK needs 'prevResult' (the result of the container's ADD)")
    saved = _saved(args, conf)
    if saved is None:
        raise CniError(
            UNKNOWN_CONTAINER,
            f"container {args.container_id} was not added through this plugin "
            f"(no saved delegate config in {conf.data_dir})",
        )
    now = delegate_config(conf, load_subnet_env(conf.subnet_file))
    was = saved.get("ipam", {}).get("ranges") if isinstance(saved.get("ipam"), dict) else None
    if was != now["ipam"]["ranges"]:
        raise CniError(
            SUBNET_CHANGED,
            f"the node's subnet changed since ADD: the container's address came from "
            f"{json.dumps(was)}, {conf.subnet_file} now gives {json.dumps(now['ipam']['ranges'])}",
        )
    ipam = saved.get("ipam")
    if isinstance(ipam, dict):
        run_plugin(
            "CHECK",
            {
                "cniVersion": saved.get("cniVersion", ""),
                "name": saved.get("name", ""),
                "type": ipam.get("type", ""),
                "ipam": ipam,
                "prevResult": conf.prev_result,
            },
            args.env,
        )
    check_interface(args, conf.prev_result)


def check_interface(args: CniArgs, prev_result: dict[str, Any]) -> None:
    """The container's interface is there with the addresses ADD gave it. (The bridge plugin's own CHECK
    is not used: Debian's bridge 1.1.1 wants a gateway on every route and flannel's routes have none.)"""
    want = sorted(
        str(entry.get("address", "")) for entry in prev_result.get("ips", []) if isinstance(entry, dict)
    )
    try:
        proc = subprocess.run(
            ["nsenter", f"--net={args.netns}", "ip", "-j", "addr", "show", "dev", args.ifname],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(
            INTERNAL, f"cannot look at {args.ifname} in {args.netns} (nsenter, ip): {exc}"
        ) from None
    try:
        links = json.loads(proc.stdout) if proc.returncode == 0 else []
    except ValueError:
        links = []
    if not links:
        raise CniError(
            INTERNAL,
            f"container interface {args.ifname} not found in {args.netns}",
            proc.stderr.strip()[:300],
        )
    have = {f"{a.get('local')}/{a.get('prefixlen')}" for a in links[0].get("addr_info", [])}
    missing = [address for address in want if address not in have]
    if missing:
        raise CniError(INTERNAL, f"container interface {args.ifname} lacks {', '.join(missing)}")


def cmd_status(args: CniArgs, conf: NetConf) -> None:
    """Ready for ADD when subnet.env is there and valid and the delegate plugins can be found."""
    try:
        env = load_subnet_env(conf.subnet_file)
        if args.path:
            delegate = delegate_config(conf, env)
            find_plugin(str(delegate["type"]), args.path)
            find_plugin(str(delegate["ipam"]["type"]), args.path)
    except CniError as exc:
        raise CniError(NOT_AVAILABLE, f"not ready for ADD: {exc.msg}", exc.details) from None


def cmd_version(stdin: bytes) -> dict[str, Any]:
    version = LATEST_VERSION
    if stdin.strip():
        raw = decode_json(stdin, "VERSION request")
        if isinstance(raw, dict) and isinstance(raw.get("cniVersion"), str):
            version = raw["cniVersion"]
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def run(env: Mapping[str, str], stdin: bytes) -> dict[str, Any] | None:
    """One CNI call; its reply for stdout (None for none). Raises CniError."""
    args = parse_env(env)
    if args.command == "VERSION":
        return cmd_version(stdin)
    conf = parse_netconf(stdin)
    if args.command == "ADD":
        return cmd_add(args, conf)
    if args.command == "DEL":
        cmd_del(args, conf)
    elif args.command == "CHECK":
        cmd_check(args, conf)
    elif args.command == "STATUS":
        cmd_status(args, conf)
    # GC: flannel keeps no state beyond the saved configs, which DEL removes; nothing to collect.
    return None


def _reply_version(stdin: bytes) -> str:
    try:
        raw = json.loads(stdin) if len(stdin) <= MAX_CONFIG_BYTES else None
    except (ValueError, RecursionError):
        return LATEST_VERSION
    version = raw.get("cniVersion") if isinstance(raw, dict) else None
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS else LATEST_VERSION


def main(
    env: Mapping[str, str] | None = None, stdin: BinaryIO | None = None, stdout: TextIO | None = None
) -> int:
    env = os.environ if env is None else env
    out = stdout or sys.stdout
    if not env.get("CNI_COMMAND"):
        # A person, not a runtime: say what this is (as CNI's skel does).
        print(
            f"{ABOUT}\nCNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}\n"
            "Run by a CNI runtime with CNI_COMMAND set; see the README's CNI section.",
            file=sys.stderr,
        )
        return 0
    data = (stdin or sys.stdin.buffer).read(MAX_CONFIG_BYTES + 1)
    try:
        reply = run(env, data)
    except CniError as exc:
        print(exc.dumps(_reply_version(data)), file=out)
        return 1
    except Exception as exc:  # noqa: BLE001 - a runtime must get an error object, never a traceback
        error = CniError(
            INTERNAL, f"flannel-cni {env.get('CNI_COMMAND')}: unexpected {type(exc).__name__}: {exc}"
        )
        print(error.dumps(_reply_version(data)), file=out)
        return 1
    if reply is not None:
        print(json.dumps(reply), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
