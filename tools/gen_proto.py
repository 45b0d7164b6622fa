"""Regenerate the committed Python stubs from every .proto in the repository.

Run from anywhere: ``python tools/gen_proto.py``. ``--check`` regenerates into a temporary
directory and exits 1 (listing the files) when the committed stubs differ.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each tree is compiled with the repository root as include path, so generated imports
# read "from proto.flannel.v1 import lease_pb2" and match the Python package layout.
PROTO_TREES = ["proto", "lease_service/etcd/proto"]


def proto_files() -> list[Path]:
    files: list[Path] = []
    for tree in PROTO_TREES:
        files.extend(sorted((ROOT / tree).rglob("*.proto")))
    return files


def generate(out: Path) -> list[Path]:
    """Compile every .proto into ``out`` (mirroring the repository layout); return the outputs."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(p.relative_to(ROOT)) for p in proto_files()]
    if not sources:
        return []
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out) for p in out.rglob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generated = generate(out)
        stale = [
            rel
            for rel in generated
            if not (ROOT / rel).exists() or not filecmp.cmp(out / rel, ROOT / rel, shallow=False)
        ]
        if args.check:
            for rel in stale:
                print(f"stale generated file: {rel}", file=sys.stderr)
            return 1 if stale else 0
        for rel in stale:
            shutil.copyfile(out / rel, ROOT / rel)
            print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
