"""The one builder of ``setpriv`` command-line prefixes (util-linux): the supervisor starts its children
through it (:mod:`supervisor.privileges`) and the backend starts wireguard-go through it.

``setpriv`` changes ids and capability sets and then ``exec``s the program, so nothing runs between
``fork`` and ``exec`` in the (threaded) caller.
"""

from __future__ import annotations

from collections.abc import Sequence


def cap_sets(caps: Sequence[str]) -> list[str]:
    """The flags that leave exactly ``caps`` (setpriv's names: ``net_admin``, ...) in the inheritable,
    ambient and bounding sets; with none, every one of them empty."""
    spec = ",".join(["-all", *(f"+{cap}" for cap in caps)])
    return [f"--inh-caps={spec}", f"--ambient-caps={spec}", f"--bounding-set={spec}"]


def setpriv_prefix(setpriv: str, caps: Sequence[str], options: Sequence[str] = ()) -> list[str]:
    """``setpriv --no-new-privs <options> <capability sets for caps> --``: a program appended to it runs
    with ``no_new_privs`` and no capability but ``caps``, and can never regain one."""
    return [setpriv, "--no-new-privs", *options, *cap_sets(caps), "--"]
