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
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec


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


class _Anything:
    """Takes any call and any attribute and answers with itself: all that ``unittest.mock.Mock`` does for
    pyroute2's rtnetlink socket module (a class attribute standing in for a queue it never uses here)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Anything:
        return self

    def __getattr__(self, name: str) -> _Anything:
        return self


def _unittest_mock() -> dict[str, types.ModuleType]:
    mock = types.ModuleType("unittest.mock")
    mock.Mock = _Anything  # type: ignore[attr-defined]
    package = types.ModuleType("unittest")
    package.mock = mock  # type: ignore[attr-defined]
    return {"unittest": package, "unittest.mock": mock}


def _ssl() -> dict[str, types.ModuleType]:
    return {"ssl": types.ModuleType("ssl")}


_STAND_INS = {
    # for one Mock() at class level: unittest and what it loads (argparse, difflib, pprint) were 1.5 MB of RSS
    "pyroute2.netlink.rtnl.iprsocket": ("unittest", _unittest_mock),
    # for its probe of TLS peers, which the backend never asks for: ssl and OpenSSL were 4.5 MB of RSS
    "pyroute2.netlink.rtnl.probe_msg": ("ssl", _ssl),
}


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads each of pyroute2's modules in :data:`_STAND_INS` with stand-ins for standard modules it imports
    but the backend never uses through it, each as small as that module needs at import. A stand-in is seen
    by that module alone, and only when the real module is not loaded yet; whoever imports the real one
    afterwards gets it."""

    def __init__(self) -> None:
        self._real: dict[str, importlib.abc.Loader] = {}
        self._pending = set(_STAND_INS)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self._pending:
            return None
        self._pending.discard(fullname)
        if not self._pending:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or _STAND_INS[fullname][0] in sys.modules:
            return spec
        self._real[fullname], spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self._real[spec.name].create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        stand_ins = _STAND_INS[module.__name__][1]()
        sys.modules.update(stand_ins)
        try:
            self._real.pop(module.__name__).exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


_pyroute2_without_its_package_init()
if not set(_STAND_INS) & set(sys.modules):
    sys.meta_path.insert(0, _StandIns())
