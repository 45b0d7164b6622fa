"""The package's public surface and the validation of its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lease_service.etcd as etcd_package
from lease_service.etcd import EtcdError, EtcdSettings, EtcdUnavailable, WatchCompacted
from lease_service.etcd.client import prefix_range_end


def test_the_public_surface_is_exactly_all() -> None:
    # The names are imported on first use: every name of __all__ resolves, and nothing else is public.
    assert all(getattr(etcd_package, name) is not None for name in etcd_package.__all__)
    # "@py_builtins"/"@pytest_ar": pytest rewrites the asserts of every package of a distribution that
    # registers a pytest plugin (ours ships the conformance kit); they are no names of the package. The
    # rest: its submodules and what the lazy imports are written with.
    public = {name for name in vars(etcd_package) if not name.startswith(("_", "@"))} - {
        "client",
        "errors",
        "settings",
        "proto",
        "annotations",
        "TYPE_CHECKING",
        "lazy_names",
    }
    assert public == set(etcd_package.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Etcd'"):
        etcd_package.Etcd  # noqa: B018 - the lookup is the test


def test_errors_form_one_tree() -> None:
    assert issubclass(EtcdUnavailable, EtcdError) and issubclass(WatchCompacted, EtcdError)
    assert WatchCompacted("x", compact_revision=7).compact_revision == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoints": ()}, "at least one"),
        ({"endpoints": ("127.0.0.1:2379",)}, "http://host:port"),
        ({"endpoints": ("unix:///run/etcd.sock",)}, "http://host:port"),
        ({"cert_file": Path("/c.pem")}, "both or neither"),
        ({"username": "root"}, "username and password"),
        ({"call_timeout": 0}, "call_timeout"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "back-off"),
    ],
)
def test_bad_settings_are_refused_with_the_offending_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EtcdSettings(**kwargs)


def test_a_single_endpoint_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="tuple"):
        EtcdSettings(endpoints="http://127.0.0.1:2379")  # type: ignore[arg-type]


def test_endpoints_parse_to_grpc_targets() -> None:
    settings = EtcdSettings(
        endpoints=("http://10.0.0.1:2379", "https://etcd.example:4001", "http://[::1]:2379")
    )
    assert [(e.target, e.secure) for e in settings.parsed_endpoints] == [
        ("10.0.0.1:2379", False),
        ("etcd.example:4001", True),
        ("[::1]:2379", False),
    ]
    assert settings.budget == 3 * settings.call_timeout


def test_prefix_range_end_is_etcds() -> None:
    assert prefix_range_end(b"/coreos.com/network/") == b"/coreos.com/network0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"") == b"\x00"
