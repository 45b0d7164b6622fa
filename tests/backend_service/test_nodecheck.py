"""br_netfilter missing is one clear warning, per enabled family, never an exit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from backend_service.nodecheck import br_netfilter_missing, warn_if_br_netfilter_missing


def test_missing_switches_are_named_per_enabled_family(tmp_path: Path) -> None:
    assert br_netfilter_missing(ipv4=True, ipv6=True, root=tmp_path) == [
        str(tmp_path / "bridge-nf-call-iptables"),
        str(tmp_path / "bridge-nf-call-ip6tables"),
    ]
    (tmp_path / "bridge-nf-call-iptables").write_text("1\n")
    assert br_netfilter_missing(ipv4=True, ipv6=False, root=tmp_path) == []
    assert br_netfilter_missing(ipv4=True, ipv6=True, root=tmp_path) == [
        str(tmp_path / "bridge-nf-call-ip6tables")
    ]


def test_one_warning_that_says_what_to_do(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert warn_if_br_netfilter_missing(ipv4=True, ipv6=False, root=tmp_path / "absent")
        assert not warn_if_br_netfilter_missing(ipv4=False, ipv6=False, root=tmp_path / "absent")
    assert len(caplog.records) == 1 and "modprobe br_netfilter" in caplog.records[0].getMessage()
