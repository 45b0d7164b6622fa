"""The delegate network config, built from the plugin's config and ``subnet.env`` exactly as flannel's
cni-plugin builds it (``doCmdAdd``/``getDelegateIPAM``):

- the ``delegate`` object, which may not set ``name`` or ``ipam`` and whose ``type`` must be a string;
- ``runtimeConfig`` copied in; ``name`` = the network's name; ``type`` default ``bridge``;
- ``ipMasq`` default ``not FLANNEL_IPMASQ`` (masquerade in the bridge when flanneld does not);
- ``mtu`` default ``FLANNEL_MTU``; for ``bridge``, ``isGateway`` default true;
- ``cniVersion`` = the config's, when it has one;
- ``ipam``: the config's ``ipam`` object (``type`` default ``host-local``) with ``ranges`` set to one
  range set per subnet (``FLANNEL_SUBNET``, ``FLANNEL_IPV6_SUBNET``) and ``routes`` = the config's
  ``ipam.routes`` followed by one route per flannel network (IPv4, then IPv6).
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from flannel_cni.errors import INVALID_NETWORK_CONFIG, CniError
from flannel_cni.netconf import NetConf
from flannel_cni.subnetenv import SubnetEnv

_ROUTE_NUMBERS = ("mtu", "advmss", "priority", "table", "scope")


def _route(raw: Any, index: int) -> dict[str, Any]:
    """One ``ipam.routes`` entry as CNI's Route type reads it (``dst`` CIDR, optional ``gw`` and numbers)."""
    where = f"ipam.routes[{index}]"
    if not isinstance(raw, dict):
        raise CniError(
            INVALID_NETWORK_CONFIG, f"failed to parse {where}: expected an object, got {raw!r}"[:300]
        )
    dst = raw.get("dst")
    try:
        route: dict[str, Any] = {"dst": str(ipaddress.ip_interface(dst))} if isinstance(dst, str) else {}
    except ValueError:
        route = {}
    if not route:
        raise CniError(INVALID_NETWORK_CONFIG, f"failed to parse {where}: dst {dst!r} is not a CIDR"[:300])
    gw = raw.get("gw")
    if gw is not None:
        try:
            route["gw"] = str(ipaddress.ip_address(gw)) if isinstance(gw, str) else None
        except ValueError:
            route["gw"] = None
        if route["gw"] is None:
            raise CniError(
                INVALID_NETWORK_CONFIG, f"failed to parse {where}: gw {gw!r} is not an IP address"[:300]
            )
    for key in _ROUTE_NUMBERS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise CniError(
                INVALID_NETWORK_CONFIG, f"failed to parse {where}: {key} {value!r} is not a number"[:300]
            )
        route[key] = value
    return route


def delegate_ipam(conf: NetConf, env: SubnetEnv) -> dict[str, Any]:
    """The delegate's ``ipam`` object."""
    ipam = copy.deepcopy(conf.ipam) if conf.ipam is not None else {}
    ipam.setdefault("type", "host-local")
    ranges = [[{"subnet": str(subnet)}] for subnet in (env.subnet, env.ipv6_subnet) if subnet is not None]
    ipam["ranges"] = ranges
    given = (conf.ipam or {}).get("routes")
    if given is not None and not isinstance(given, list):
        raise CniError(
            INVALID_NETWORK_CONFIG, f"failed to parse ipam.routes: expected a list, got {given!r}"[:300]
        )
    routes = [_route(raw, i) for i, raw in enumerate(given or [])]
    routes += [{"dst": str(net)} for net in (*env.networks, *env.ipv6_networks)]
    ipam["routes"] = routes
    return ipam


def delegate_config(conf: NetConf, env: SubnetEnv) -> dict[str, Any]:
    """The whole delegate config handed to the delegate plugin on ADD (and saved for DEL)."""
    delegate = copy.deepcopy(conf.delegate) if conf.delegate is not None else {}
    if "type" in delegate and not isinstance(delegate["type"], str):
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"'delegate.type' must be a string naming a plugin, got {delegate['type']!r}"[:300],
        )
    if "name" in delegate:
        raise CniError(
            INVALID_NETWORK_CONFIG, "'delegate' may not set 'name': flannel sets it to the network's name"
        )
    if "ipam" in delegate:
        raise CniError(
            INVALID_NETWORK_CONFIG,
            "'delegate' may not set 'ipam': flannel builds it from subnet.env (use the top-level 'ipam')",
        )
    if conf.runtime_config is not None:
        delegate["runtimeConfig"] = copy.deepcopy(conf.runtime_config)
    delegate["name"] = conf.name
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    if conf.cni_version:
        delegate["cniVersion"] = conf.cni_version
    delegate["ipam"] = delegate_ipam(conf, env)
    return delegate
