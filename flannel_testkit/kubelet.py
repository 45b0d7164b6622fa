"""A DaemonSet's pod run with podman as kubelet would run it, on a node of the namespace harness
(``flannel_testkit.cluster``), and the image and wheels it needs (tools/build-image, in a checkout).

Everything comes from the manifest (``deploy/kube-flannel-py.yml``): each container's image, command and
args (with kubelet's ``$(VAR)`` expansion), env (values and the downward API's fieldRefs), securityContext
(runAsUser/runAsGroup, the pod's fsGroup as a supplementary group, capabilities drop/add,
allowPrivilegeEscalation, readOnlyRootFilesystem) and volume mounts. Kubelet's side is played like this:

- ``hostNetwork: true``: the node's network namespace, ``--network ns:/run/netns/<node ns>``;
- ``hostPath``: a directory (or file) under the node's own root directory, never the host's;
- ``emptyDir``: a host directory, group-owned by the pod's fsGroup with the setgid bit, as kubelet makes it;
- ``configMap``: the ConfigMap's data (from the same manifest) as files, mounted read-only;
- ``projected`` service-account volume: a token, ``ca.crt`` and ``namespace`` file, read-only.

One deliberate difference: the test API server speaks plain HTTP, so the container that mounts the
service-account token (the only one that may talk to the API) also gets a kubeconfig for it, mounted at
``KUBECONFIG_PATH`` and named by ``FLANNELD_KUBECONFIG_FILE``, where kubelet would inject
``KUBERNETES_SERVICE_HOST``/``PORT`` for the in-cluster config.

Containers are labelled ``io.flannel-py.test=<id>``; ``remove_labelled`` removes whatever is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flannel_testkit.podman import RUN_FLAGS
from flannel_testkit.processes import Daemon

REPO = Path(__file__).resolve().parents[1]  # build_image and host_wheels work in a checkout
PODMAN = "podman"
TEST_LABEL = "io.flannel-py.test"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBECONFIG_PATH = "/etc/flannel-py-test/kubeconfig"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class ManifestError(Exception):
    """The manifest uses something this kubelet stand-in does not play (named, never ignored)."""


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def build_image(timeout: float = 1200) -> str:
    """``tools/build-image`` (a no-op when the image already holds these sources); the image's name."""
    proc = subprocess.run(
        [str(REPO / "tools" / "build-image")],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tools/build-image exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


_NOT_SOURCES = (
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".demo",
    ".mypy_cache",
    ".ruff_cache",
)


def host_wheels(dest: Path, python_version: str = "3.11") -> Path:
    """The project's wheel (``pip wheel``) and its dependencies' binary wheels for ``python_version`` on
    this architecture (``pip download``) in ``dest``, as tools/build-image gathers them; the project's."""
    import platform
    import sys

    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # from a copy of the checkout, as tools/build-image does: setuptools builds in the source tree, and two
    # builds sharing the checkout's build/ (this and an image build on another worker) trip over each other
    with tempfile.TemporaryDirectory(prefix="flannel-py-wheel-") as copy:
        source = Path(copy) / "src"
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--wheel-dir", str(dest), str(source)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    [wheel] = dest.glob("flannel_py-*.whl")
    arch = platform.machine()
    platforms = [
        arg
        for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014", "manylinux1", "linux")
        for arg in ("--platform", f"{tag}_{arch}")
    ]
    subprocess.run(
        [
            *pip,
            "download",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            *platforms,
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return wheel


def remove_labelled(test_id: str) -> None:
    """Remove every container (running or not) labelled with this test's id."""
    ids = podman(
        "ps", "--all", "--quiet", "--filter", f"label={TEST_LABEL}={test_id}", check=False
    ).stdout.split()
    if ids:
        podman("rm", "--force", "--time", "0", *ids, check=False)


# --------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Manifest:
    """The documents of a manifest file, by kind."""

    documents: tuple[dict[str, Any], ...]

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls(tuple(doc for doc in yaml.safe_load_all(path.read_text()) if doc))

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
        if len(found) != 1:
            raise ManifestError(f"expected one {kind}{' ' + name if name else ''}, found {len(found)}")
        return found[0]

    @property
    def daemonset(self) -> dict[str, Any]:
        return self.one("DaemonSet")

    @property
    def pod_spec(self) -> dict[str, Any]:
        return dict(self.daemonset["spec"]["template"]["spec"])


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubelet's expansion of ``$(VAR)`` in command and args: defined variables are replaced, ``$$`` is a
    literal ``$``, anything else is left as written."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(one, text)


@dataclass(frozen=True)
class PodPlacement:
    """Where kubelet puts one pod of the DaemonSet: the node, its network namespace, its filesystem."""

    node_name: str
    netns: str
    node_root: Path  # stands for the node's /: hostPath volumes live under it
    pod_dir: Path  # emptyDir, configMap and projected volumes of this pod
    test_id: str
    kubeconfig: Path | None = None

    @property
    def pod_name(self) -> str:
        return f"{self.node_name}-flannel-py"


class Kubelet:
    """Runs the containers of one pod of ``manifest``'s DaemonSet on one node with podman."""

    def __init__(
        self, manifest: Manifest, placement: PodPlacement, image_overrides: Mapping[str, str] = {}
    ) -> None:
        self.manifest = manifest
        self.pod = manifest.pod_spec
        self.at = placement
        self.image_overrides = dict(image_overrides)
        self.namespace = str(manifest.daemonset["metadata"]["namespace"])
        self.volume_paths: dict[str, Path] = {}
        if not self.pod.get("hostNetwork"):
            raise ManifestError("the pod is not hostNetwork: only host networking is played here")
        for volume in self.pod.get("volumes", []):
            self.volume_paths[volume["name"]] = self._make_volume(volume)

    # ------------------------------------------------------------------ volumes

    def _make_volume(self, volume: Mapping[str, Any]) -> Path:
        name = volume["name"]
        fs_group = self.pod.get("securityContext", {}).get("fsGroup")
        if "hostPath" in volume:
            path = self.at.node_root / str(volume["hostPath"]["path"]).lstrip("/")
            if volume["hostPath"].get("type") == "FileOrCreate":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
            return path
        path = self.at.pod_dir / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            os.chmod(path, 0o2777 if fs_group is not None else 0o777)
            if fs_group is not None:
                os.chown(path, 0, int(fs_group))
        elif "configMap" in volume:
            data = self.manifest.one("ConfigMap", volume["configMap"]["name"])["data"]
            for key, value in data.items():
                (path / key).write_text(value)
                os.chmod(path / key, int(volume["configMap"].get("defaultMode", 0o644)))
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if "serviceAccountToken" in source:
                    (path / source["serviceAccountToken"]["path"]).write_text(
                        f"test-token-{self.at.pod_name}"
                    )
                elif "configMap" in source:
                    for item in source["configMap"].get("items", []):
                        (path / item["path"]).write_text("# the test API server speaks HTTP: no CA\n")
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"]["items"]:
                        (path / item["path"]).write_text(self._field(item["fieldRef"]["fieldPath"]))
                else:
                    raise ManifestError(
                        f"volume {name}: projected source {sorted(source)} is not played here"
                    )
            for child in path.iterdir():
                os.chmod(child, int(volume["projected"].get("defaultMode", 0o644)))
        else:
            raise ManifestError(f"volume {name}: kind {sorted(set(volume) - {'name'})} is not played here")
        return path

    def _field(self, field_path: str) -> str:
        values = {
            "metadata.name": self.at.pod_name,
            "metadata.namespace": self.namespace,
            "spec.nodeName": self.at.node_name,
        }
        if field_path not in values:
            raise ManifestError(f"fieldRef {field_path!r} is not played here (known: {sorted(values)})")
        return values[field_path]

    # ------------------------------------------------------------------ containers

    def container(self, name: str) -> dict[str, Any]:
        for c in [*self.pod.get("initContainers", []), *self.pod["containers"]]:
            if c["name"] == name:
                return dict(c)
        raise ManifestError(f"no container {name!r} in the pod")

    def container_name(self, name: str) -> str:
        return f"fpt{self.at.test_id}-{self.at.node_name}-{name}"

    def env(self, container: Mapping[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
            elif "fieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = self._field(item["valueFrom"]["fieldRef"]["fieldPath"])
            else:
                raise ManifestError(
                    f"env {item['name']}: {sorted(item.get('valueFrom', {}))} is not played here"
                )
        return env

    def run_argv(self, name: str) -> list[str]:
        """``podman run`` arguments (after ``run``) for container ``name``, as kubelet would start it."""
        c = self.container(name)
        sc = c.get("securityContext", {})
        pod_sc = self.pod.get("securityContext", {})
        env = self.env(c)
        mounts_token = any(m["mountPath"].rstrip("/") == TOKEN_PATH for m in c.get("volumeMounts", []))
        argv = [
            "--rm",
            "--name",
            self.container_name(name),
            "--label",
            f"{TEST_LABEL}={self.at.test_id}",
            *RUN_FLAGS,
            "--network",
            f"ns:/run/netns/{self.at.netns}",
            "--hostname",
            self.at.node_name,
        ]
        if "runAsUser" in sc:
            user = str(sc["runAsUser"])
            argv += ["--user", f"{user}:{sc['runAsGroup']}" if "runAsGroup" in sc else user]
        if sc.get("runAsNonRoot") and sc.get("runAsUser", 0) == 0:
            raise ManifestError(
                f"container {name}: runAsNonRoot with uid 0: kubelet would refuse to start it"
            )
        if "fsGroup" in pod_sc:
            argv += ["--group-add", str(pod_sc["fsGroup"])]
        caps = sc.get("capabilities", {})
        for cap in caps.get("drop", []):
            argv += ["--cap-drop", cap.lower()]
        for cap in caps.get("add", []):
            argv += ["--cap-add", cap.lower()]
        if sc.get("privileged"):
            raise ManifestError(f"container {name}: privileged containers are not played here")
        if sc.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        if sc.get("readOnlyRootFilesystem"):
            argv += ["--read-only", "--read-only-tmpfs=false"]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        for mount in c.get("volumeMounts", []):
            volume = next(v for v in self.pod["volumes"] if v["name"] == mount["name"])
            read_only = mount.get("readOnly") or "configMap" in volume or "projected" in volume
            argv += [
                "--volume",
                (
                    f"{self.volume_paths[mount['name']]}:{mount['mountPath'].rstrip('/')}"
                    f"{':ro' if read_only else ''}"
                ),
            ]
        if mounts_token and self.at.kubeconfig is not None:
            argv += [
                "--volume",
                f"{self.at.kubeconfig}:{KUBECONFIG_PATH}:ro",
                "--env",
                f"FLANNELD_KUBECONFIG_FILE={KUBECONFIG_PATH}",
            ]
        if "command" in c:
            argv += ["--entrypoint", json.dumps([expand(part, env) for part in c["command"]])]
        image = self.image_overrides.get(c["image"], c["image"])
        argv += [image, *[expand(str(arg), env) for arg in c.get("args", [])]]
        return argv

    def host_path(self, name: str, path: str) -> Path:
        """The host path behind ``path`` as container ``name`` sees it (through its volume mounts)."""
        best: tuple[str, Path] | None = None
        for mount in self.container(name).get("volumeMounts", []):
            target = mount["mountPath"].rstrip("/")
            if (path == target or path.startswith(target + "/")) and (
                best is None or len(target) > len(best[0])
            ):
                best = (target, self.volume_paths[mount["name"]])
        if best is None:
            raise ManifestError(f"container {name}: {path} is on no volume (the container's own filesystem)")
        return best[1] / path[len(best[0]) :].lstrip("/")

    def flag(self, name: str, flag: str) -> str:
        """The value of ``--flag=value`` in container ``name``'s args (as written in the manifest)."""
        for arg in self.container(name).get("args", []):
            if str(arg).startswith(flag + "="):
                return str(arg).split("=", 1)[1]
        raise ManifestError(f"container {name}: no {flag}=... in its args")

    def run_init(self, name: str, timeout: float = 120) -> None:
        """Run an init container to completion; fail with its output if it fails."""
        proc = podman("run", *self.run_argv(name), check=False, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"init container {name} exited {proc.returncode}: {proc.stdout}{proc.stderr}")

    def daemon(self, name: str, log_path: Path) -> Container:
        """Container ``name`` as a harness daemon (``start``, ``alive``, ``stop``, ``kill``, ``log``)."""
        return Container(self.container_name(name), self.run_argv(name), log_path)

    def probe(self, name: str, kind: str) -> subprocess.CompletedProcess[str]:
        """Run container ``name``'s ``kind`` probe (``readinessProbe``, ...) in it, as kubelet's exec probe."""
        probe = self.container(name)[kind]
        return podman(
            "exec",
            self.container_name(name),
            *probe["exec"]["command"],
            check=False,
            timeout=float(probe.get("timeoutSeconds", 1)) + 30,
        )


class Container(Daemon):
    """A container run by an attached ``podman run`` whose output goes to a log file."""

    def __init__(self, name: str, run_argv: Sequence[str], log_path: Path) -> None:
        super().__init__("", [PODMAN, "run", *run_argv], log_path)
        self.name = name

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=False)

    def proc_status(self) -> dict[str, str]:
        """``/proc/1/status`` of the container's main process, read inside the container."""
        out = podman("exec", self.name, "cat", "/proc/1/status").stdout
        return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}

    def stop(self, sig: int = 15, timeout: float = 10.0) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            podman("kill", "--signal", str(sig), self.name, check=False)
        return super().stop(sig, timeout)

    def kill(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)
        super().kill()
