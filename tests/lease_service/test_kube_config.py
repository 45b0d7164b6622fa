"""Reading a kubeconfig file and the in-cluster service account without the Kubernetes client."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from lease_service.netconfig import ConfigError
from lease_service.subnet.kube_config import BearerToken, KubeConnection, from_kubeconfig, in_cluster


def kubeconfig(tmp: Path, cluster: str, user: str, context_user: str = "u") -> Path:
    path = tmp / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
current-context: c
contexts:
- name: other
  context: {{cluster: nowhere, user: nobody}}
- name: c
  context: {{cluster: k, user: {context_user}}}
clusters:
- name: k
  cluster:
{cluster}
users:
- name: u
  user:
{user}
""")
    return path


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key (PEM)."""
    tmp = tmp_path_factory.mktemp("pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=flannel",
            "-keyout",
            str(tmp / "k.pem"),
            "-out",
            str(tmp / "c.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return (tmp / "c.pem").read_bytes(), (tmp / "k.pem").read_bytes()


def test_the_current_context_gives_the_server_token_and_ca_file_relative_to_the_kubeconfig(
    tmp_path: Path, pem: tuple[bytes, bytes]
) -> None:
    (tmp_path / "ca.crt").write_bytes(pem[0])
    conn = from_kubeconfig(
        kubeconfig(
            tmp_path,
            "    server: https://10.0.0.1:6443/\n    certificate-authority: ca.crt",
            "    token: abc",
        )
    )
    assert (conn.server, conn.token, conn.ca_pem) == ("https://10.0.0.1:6443", "abc", pem[0].decode())
    assert BearerToken(conn).header() == "Bearer abc"
    ctx = conn.ssl_context()
    assert ctx is not None and ctx.check_hostname


def test_client_certificate_data_and_insecure_skip_verify(tmp_path: Path, pem: tuple[bytes, bytes]) -> None:
    cert, key = (base64.b64encode(x).decode() for x in pem)
    conn = from_kubeconfig(
        kubeconfig(
            tmp_path,
            "    server: https://k.example:6443\n    insecure-skip-tls-verify: true",
            f"    client-certificate-data: {cert}\n    client-key-data: {key}",
        )
    )
    assert conn.insecure and conn.cert_pem == pem[0] and conn.key_pem == pem[1]
    ctx = conn.ssl_context()
    assert ctx is not None and not ctx.check_hostname
    assert BearerToken(conn).header() is None


def test_a_token_file_is_read_and_followed(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    conn = from_kubeconfig(kubeconfig(tmp_path, "    server: http://127.0.0.1:8080", "    tokenFile: token"))
    assert conn.ssl_context() is None
    assert BearerToken(conn).header() == "Bearer first"


@pytest.mark.parametrize(
    ("cluster", "user", "words"),
    [
        ("    server: https://x", "    exec: {command: aws}", ["exec credential plugin"]),
        ("    server: ftp://x", "    token: a", ["no http(s) server"]),
        ("    server: https://x", "    token: a", ["no user named 'v'"]),
        (
            "    server: https://x\n    certificate-authority: missing.crt",
            "    token: a",
            ["missing.crt", "cannot read"],
        ),
        ("    server: https://x\n    certificate-authority-data: '%%%'", "    token: a", ["not base64"]),
    ],
)
def test_unusable_kubeconfigs_are_refused_naming_what(
    tmp_path: Path, cluster: str, user: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        from_kubeconfig(kubeconfig(tmp_path, cluster, user, context_user="v" if "'v'" in words[0] else "u"))
    for word in words:
        assert word in str(err.value)


def test_in_cluster_reads_the_service_account(tmp_path: Path, pem: tuple[bytes, bytes]) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(pem[0])
    conn = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)
    assert conn.server == "https://[fd00::1]:443" and conn.ca_pem == pem[0].decode()
    assert BearerToken(conn).header() == "Bearer sa-token"
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster({}, tmp_path)


def test_the_api_url_flag_replaces_only_the_server() -> None:
    conn = KubeConnection("https://a:1", token="t").with_server("http://b:2/")
    assert (conn.server, conn.token) == ("http://b:2", "t")
