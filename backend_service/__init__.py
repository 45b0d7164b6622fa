"""flannel-py backend service: the dataplane (vxlan, host-gw, wireguard), the only process with CAP_NET_ADMIN.

A small controller (``controller``) runs two owned tasks: the ``session`` with the lease service
(which runs the ``follow``-er of the lease stream) and the ``reconciler``. The package stands on
floors, each importing only from the floors below it (an import-linter ``layers`` contract in
pyproject.toml checks it):

- ``__main__``; ``cleanup``, ``server``, ``session``; ``controller``; ``reconciler``; ``planner``;
- the backends, one package each (``vxlan/``, ``hostgw/``, ``wireguard/``: ``backend`` over its
  ``device`` and its pure ``desired`` state), ``masq`` (flannel's masquerade and forward rules) and
  ``validate`` (reject bad leases with reason codes);
- ``backend`` (the ``Backend`` protocol every backend implements);
- ``kernel/`` (the kernel model, the diff, reading and applying) and ``blackhole``;
- ``desired`` (routes, neighbours, FDB entries, WireGuard peers as values), ``leases`` (proto Lease →
  PeerLease), and at the bottom ``config``, ``node`` and the small leaves.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def _pyroute2_without_its_package_init() -> None:
    """Load pyroute2's modules as the backend imports them, without running ``pyroute2/__init__.py``.

    That file imports every family pyroute2 has (IPDB, NDB, conntrack, ipset, IPVS, nl80211, WireGuard,
    devlink, plan9, ...): 160 modules, ~0.1 s of start-up and 6 MB of RSS, of which the backend uses the
    rtnetlink socket and its messages (``pyroute2.iproute.linux``, ``pyroute2.netlink...``). The package
    is entered without its ``__init__``; a name asked of it that is a submodule is imported as one, and
    any other (``from pyroute2 import IPRoute``, as the tests write) runs the real ``__init__`` then.
    """
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    whole = False

    def __getattr__(name: str) -> object:
        nonlocal whole
        if name.startswith("__") or whole:
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        whole = True
        assert spec.loader is not None
        spec.loader.exec_module(package)  # the package's own names: load it whole, once
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    setattr(package, "__getattr__", __getattr__)  # noqa: B010 - a module's __getattr__ (PEP 562)
    sys.modules["pyroute2"] = package


_pyroute2_without_its_package_init()
