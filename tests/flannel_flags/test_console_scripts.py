"""The installed console scripts: every bad value is exit status 2 and one line on stderr naming the
flag (or variable), the value and what was expected, never a traceback; ``--version`` prints the
package's version and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import flannel_flags

BIN = Path(sys.executable).parent


def run(script: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLANNELD_")}
    return subprocess.run(
        [str(BIN / script), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("script", ["flanneld", "flannel-lease-service", "flannel-backend", "flannelctl"])
def test_version_prints_the_package_version(script: str) -> None:
    done = run(script, ["--version"])
    assert done.returncode == 0 and done.stdout.strip() == flannel_flags.version() != "unknown"


BAD = [
    ("flanneld", ["--etcd-endpoints", "http://[bad"], {}, ["--etcd-endpoints", "'http://[bad'"]),
    ("flanneld", ["-etcd-endpoints=http://10.0.0.1:port"], {}, ["-etcd-endpoints", "'http://10.0.0.1:port'"]),
    ("flanneld", ["--healthz-port", "http"], {}, ["--healthz-port", "'http'", "integer"]),
    ("flanneld", ["--subnet-lease-renew-margin", "0"], {}, ["--subnet-lease-renew-margin", "from 1 to 1439"]),
    ("flanneld", ["--etcd-endpoint=http://10.0.0.1:2379"], {}, ["--etcd-endpoint", "did you mean"]),
    ("flanneld", ["--iface-regex", "eth[0"], {}, ["--iface-regex", "'eth[0'", "regular expression"]),
    ("flanneld", [], {"FLANNELD_IP_MASQ": "on"}, ["FLANNELD_IP_MASQ", "'on'", "boolean"]),
    ("flanneld", ["--lease-user", "no-such-user-x"], {}, ["--lease-user", "'no-such-user-x'"]),
    (
        "flannel-lease-service",
        ["--etcd-endpoints", "http://10.0.0.1:2379/v2/keys"],
        {},
        ["--etcd-endpoints", "'http://10.0.0.1:2379/v2/keys'", "nothing after the host and port"],
    ),
    ("flannel-lease-service", ["--public-ip", "10.0.0.300"], {}, ["--public-ip", "'10.0.0.300'", "IPv4"]),
    (
        "flannel-lease-service",
        ["--subnet-lease-renew-margin", "1440"],
        {},
        ["--subnet-lease-renew-margin", "1440"],
    ),
    ("flannel-lease-service", [], {"FLANNELD_IP_MASQ": "on"}, ["FLANNELD_IP_MASQ", "'on'"]),
    ("flannel-lease-service", ["--metrics-listen", "9101"], {}, ["--metrics-listen", "'9101'", "HOST:PORT"]),
    ("flannel-backend", ["--iptables-resync", "0"], {}, ["--iptables-resync", "from 1 to 86400", "0"]),
    ("flannel-lease-service", ["--public-ipv6", "10.0.0.1"], {}, ["--public-ipv6", "'10.0.0.1'", "IPv6"]),
    ("flannel-backend", ["--iface", "eth0"], {}, ["--iface"]),  # the lease service's decision, not ours
    ("flannel-backend", ["-iptables-forward-rules=maybe"], {}, ["-iptables-forward-rules", "'maybe'"]),
    ("flannel-backend", [], {"FLANNELD_IP_MASQ": "on"}, ["FLANNELD_IP_MASQ", "'on'"]),
    ("flannelctl", ["--timeout", "soon", "status"], {}, ["--timeout", "'soon'", "duration"]),
    ("flannelctl", ["-o", "xml", "status"], {}, ["--output", "'xml'"]),
    ("flannelctl", ["status", "--run", "/tmp"], {}, ["--run"]),
]


@pytest.mark.parametrize(("script", "argv", "env", "words"), BAD, ids=[f"{b[0]} {b[1] or b[2]}" for b in BAD])
def test_a_bad_value_is_exit_2_and_one_line_naming_it(
    script: str, argv: list[str], env: dict[str, str], words: list[str]
) -> None:
    done = run(script, argv, env)
    assert done.returncode == 2, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"{script}: ") and all(word in lines[0] for word in words), lines[0]


def test_an_unknown_variable_is_one_warning_not_an_error(tmp_path: Path) -> None:
    done = run("flannel-backend", ["--run-dir", str(tmp_path), "--help"], {"FLANNELD_NO_SUCH": "1"})
    assert done.returncode == 0 and "--iptables-forward-rules" in done.stdout
