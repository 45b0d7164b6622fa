"""The three PATCH algorithms the API server applies to a Node: JSON merge patch (RFC 7386), strategic
merge patch with a Node's merge keys, and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

#: Strategic-merge patch merge keys of a Node's lists (k8s.io/api/core/v1 ``patchMergeKey``);
#: other lists are replaced whole, like the real server does for lists without a merge strategy.
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "volumesAttached"): "name",
    ("spec", "taints"): "key",
    ("metadata", "ownerReferences"): "uid",
}
#: Lists of scalars with ``patchStrategy: merge`` (set union).
MERGE_SCALAR_LISTS = {("metadata", "finalizers")}


class PatchError(Exception):
    """A patch that cannot be applied (the server answers 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Kubernetes' strategic merge patch for Node objects.

    Like a merge patch, except that lists with a patch merge key (``status.conditions`` by ``type``,
    ``status.addresses`` by ``type``, ...) are merged element by element on that key, and
    ``metadata.finalizers`` by set union. Directives: ``$patch: replace`` / ``$patch: delete`` on maps,
    ``$patch: delete`` on list elements; ``$retainKeys``, ``$setElementOrder/...`` and
    ``$deleteFromPrimitiveList/...`` are ignored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        where = (*path, key)
        if value is None:
            result.pop(key, None)
        elif where in MERGE_KEYS and isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, MERGE_KEYS[where], where)
        elif where in MERGE_SCALAR_LISTS and isinstance(value, list):
            merged = list(result.get(key) or [])
            result[key] = merged + [v for v in value if v not in merged]
        else:
            merged_value = strategic_merge_patch(result.get(key), value, where)
            if merged_value is None:
                result.pop(key, None)
            else:
                result[key] = merged_value
    return result


def _merge_list(old: Any, patch: list[Any], merge_key: str, path: tuple[str, ...]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    merged = [copy.deepcopy(item) for item in old] if isinstance(old, list) else []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {merge_key}")
        found = next(
            (i for i, o in enumerate(merged) if isinstance(o, dict) and o.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get("$patch") == "delete":
            if found is not None:
                del merged[found]
        elif found is None:
            merged.append(
                {k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("$") and v is not None}
            )
        else:
            merged[found] = strategic_merge_patch(merged[found], item, path)
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return doc


def _index(parent: list[Any], part: str, path: str, *, adding: bool = False) -> int:
    if adding and part == "-":
        return len(parent)
    if not part.isdigit():
        raise PatchError(f"invalid array index {part!r} in {path!r}")
    index = int(part)
    if index > len(parent) or (index == len(parent) and not adding):
        raise PatchError(f"array index out of bounds in {path!r}")
    return index


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise TypeError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)

    def remove(path: str) -> Any:
        parts = _pointer(path)
        if not parts:
            raise PatchError("cannot remove the whole document")
        parent = _resolve(doc, parts[:-1], path)
        last = parts[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise PatchError(f"unable to remove nonexistent key: {last} (path: {path})")
            return parent.pop(last)
        if isinstance(parent, list):
            return parent.pop(_index(parent, last, path))
        raise PatchError(f"doc is missing path: {path!r}")

    def add(path: str, value: Any) -> None:
        nonlocal doc
        parts = _pointer(path)
        if not parts:
            doc = copy.deepcopy(value)
            return
        parent = _resolve(doc, parts[:-1], path)
        last = parts[-1]
        if isinstance(parent, dict):
            parent[last] = copy.deepcopy(value)
        elif isinstance(parent, list):
            parent.insert(_index(parent, last, path, adding=True), copy.deepcopy(value))
        else:
            raise PatchError(f"doc is missing path: {path!r}")

    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind, path = op.get("op"), op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} operation does not apply: missing value for path {path!r}")
        if kind == "add":
            add(path, op["value"])
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            remove(path) if _pointer(path) else None
            add(path, op["value"])
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise PatchError(f"{kind} operation needs 'from'")
            value = (
                remove(source) if kind == "move" else copy.deepcopy(_resolve(doc, _pointer(source), source))
            )
            add(path, value)
        elif kind == "test":
            if _resolve(doc, _pointer(path), path) != op["value"]:
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc
