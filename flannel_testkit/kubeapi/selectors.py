"""Label and field selectors of list and watch requests, as matchers of a Node's JSON."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flannel_testkit.kubeapi.nodes import JSON


class BadRequest(Exception):
    pass


def _requirement(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op in ("=", "==", "in"):
        return labels.get(key) in values
    if op in ("!=", "notin"):
        return labels.get(key) not in values
    return (key in labels) == (op == "exists")


def _label_matcher(selector: str) -> Callable[[JSON], bool]:
    """Equality- and set-based label selectors (``a=b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``)."""
    requirements: list[tuple[str, str, frozenset[str]]] = []
    for term in re.findall(r"(?:[^,(]|\([^)]*\))+", selector):
        term = term.strip()
        if not term:
            continue
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term)
        if m:
            requirements.append((m.group(1), m.group(2), frozenset(v.strip() for v in m.group(3).split(","))))
            continue
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", term)
        if m:
            requirements.append((m.group(1), m.group(2), frozenset([m.group(3)])))
            continue
        m = re.fullmatch(r"(!?)([^=!\s]+)", term)
        if m is None:
            raise BadRequest(f"unable to parse requirement: {term!r}")
        requirements.append((m.group(2), "absent" if m.group(1) else "exists", frozenset()))

    def matches(obj: JSON) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(_requirement(labels, key, op, values) for key, op, values in requirements)

    return matches


def _field_matcher(selector: str) -> Callable[[JSON], bool]:
    """Field selectors on ``metadata.name`` (the only Node field the server needs here)."""
    requirements: list[tuple[bool, str]] = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        m = re.fullmatch(r"([^=!]+)(==|=|!=)(.*)", term)
        if m is None:
            raise BadRequest(f"invalid selector: '{selector}'; can't understand '{term}'")
        key, op, value = m.groups()
        if key != "metadata.name":
            raise BadRequest(f"field label not supported: {key}")
        requirements.append((op != "!=", value))

    def matches(obj: JSON) -> bool:
        name = obj.get("metadata", {}).get("name")
        return all((name == value) == equal for equal, value in requirements)

    return matches


def everything(obj: JSON) -> bool:
    return True


def matcher(query: Any) -> Callable[[JSON], bool]:
    """The selectors of a list or watch; :func:`everything` when there are none."""
    if not query.get("labelSelector") and not query.get("fieldSelector"):
        return everything
    labels = _label_matcher(query.get("labelSelector", ""))
    fields = _field_matcher(query.get("fieldSelector", ""))
    return lambda obj: labels(obj) and fields(obj)
