"""The pytest side of the conformance kit: its options, and the kit's tests added to the run when a
backend command is given. Loaded by every pytest in an environment where flannel-py is installed, so it
imports nothing heavy."""

from __future__ import annotations

from pathlib import Path

import pytest

KIT = Path(__file__).with_name("test_conformance.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flannel-conformance", "flannel-py backend conformance kit")
    group.addoption(
        "--flannel-backend-cmd",
        default=None,
        metavar="COMMAND",
        help="the backend's command line ({run_dir} is replaced by the node's run dir); "
        "runs the conformance kit against it",
    )
    group.addoption(
        "--flannel-backend-config",
        default=None,
        metavar="JSON",
        help='the "Backend" object of the network config, e.g. \'{"Type": "mine"}\' '
        '(default {"Type": "custom"})',
    )
    group.addoption(
        "--flannel-peer-backend-data",
        default=None,
        metavar="JSON",
        help="the BackendData of the hand-made peer leases the kit writes (default: none)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs root and network namespaces")
    if config.getoption("flannel_backend_cmd") is None:
        return
    kit = str(KIT)
    if config.args_source != pytest.Config.ArgsSource.ARGS:  # no paths given: the kit alone
        config.args[:] = [kit]
    elif kit not in config.args:
        config.args.append(kit)
