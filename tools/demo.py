#!/usr/bin/env python3
"""flannel-py on one machine: a real etcd and N nodes in network namespaces, each node run by
flanneld (the supervisor, which starts the lease service without capabilities and the backend
with CAP_NET_ADMIN + CAP_NET_RAW only), one pod per node made through CNI (flannel-cni delegating
to the real bridge and host-local plugins, as kubelet would), then a ping matrix between the pods
and a picture of what it built. The cluster stays up after this script returns; ``tools/demo --down``
removes it.

Needs root. On first use it runs tools/bootstrap (apt: etcd, iproute2, util-linux's setpriv, the CNI
plugins; .venv with the package). Nothing touches the host's own network: every device lives in a
namespace named ``fptdemo-*``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
DEMO_ID = "demo"
STATE_DIR = Path(os.environ.get("FLANNEL_DEMO_DIR", "/tmp/flannel-demo"))
BACKENDS: dict[str, dict[str, Any]] = {
    "vxlan": {"Type": "vxlan"},
    "vxlan-direct": {"Type": "vxlan", "DirectRouting": True},
    "host-gw": {"Type": "host-gw"},
}


def parse_args() -> argparse.Namespace:
    """Flags first, with nothing imported or installed yet, so that --help answers at once."""
    parser = argparse.ArgumentParser(
        prog="tools/demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--down", action="store_true", help="remove the demo cluster (namespaces, processes, state)"
    )
    parser.add_argument(
        "--nodes", type=int, default=3, help="number of nodes, 1 to 200 (default %(default)s)"
    )
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="vxlan", help="default %(default)s")
    parser.add_argument(
        "--network", default="10.244.0.0/16", help="the overlay network (default %(default)s)"
    )
    parser.add_argument("--ip-masq", action="store_true", help="masquerade traffic leaving the overlay")
    parser.add_argument(
        "--pings", type=int, default=3, help="pings per pair in the matrix (default %(default)s)"
    )
    parser.add_argument(
        "--no-flanneld",
        action="store_true",
        help="run the lease service and the backend directly instead of under flanneld",
    )
    args = parser.parse_args()
    if not 1 <= args.nodes <= 200:
        parser.error("--nodes must be between 1 and 200")
    return args


def into_venv() -> None:
    """Install what the demo needs on first use, then re-run this script with the venv's Python."""
    python = VENV / "bin" / "python"
    if not python.exists():
        import subprocess

        subprocess.run([str(ROOT / "tools" / "bootstrap")], check=True)
    if Path(sys.prefix).resolve() != VENV.resolve() and "FLANNEL_DEMO_NO_VENV" not in os.environ:
        os.execv(str(python), [str(python), *sys.argv])
    sys.path.insert(0, str(ROOT))


def down() -> int:
    import shutil

    from flannel_testkit.cluster import Cluster

    removed = Cluster.down_by_id(DEMO_ID)
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    if removed:
        print(f"removed namespaces {' '.join(sorted(removed))}, their processes, and {STATE_DIR}")
    else:
        print(f"nothing was running (no fpt{DEMO_ID}-* namespace); {STATE_DIR} removed")
    return 0


def up(args: argparse.Namespace) -> int:
    from flannel_testkit.cluster import Cluster, list_namespaces

    if list_namespaces(f"fpt{DEMO_ID}-"):
        print("a demo cluster is already up; removing it first")
        down()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    config = {"Network": args.network, "Backend": BACKENDS[args.backend]}
    runner = "the two daemons directly" if args.no_flanneld else "flanneld (the supervisor)"
    print(
        f"starting etcd and {args.nodes} nodes, backend {args.backend}, each node run by {runner}, "
        "pods through flannel-cni ...",
        flush=True,
    )
    cluster = Cluster(
        STATE_DIR,
        args.nodes,
        config,
        ip_masq=args.ip_masq,
        cluster_id=DEMO_ID,
        flanneld=not args.no_flanneld,
        keep=True,
    )
    with cluster:
        report(cluster, args)
    return 0


def report(c: object, args: argparse.Namespace) -> None:
    from flannel_testkit.cluster import Cluster

    assert isinstance(c, Cluster) and c.etcd is not None
    print()
    print(f"etcd   {c.etcd.endpoint}   (netns {c.etcd_ns}; network config at {c.prefix}/config)")
    print()
    header = ("NODE", "NETNS", "PUBLIC IP", "SUBNET", "MTU", "POD IP", "POD NETNS", "RUN DIR")
    rows = [
        (n.name, n.ns, n.public_ip, n.subnet, str(n.mtu), n.pod_ip, n.pod_ns, str(n.run_dir)) for n in c.nodes
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    count = args.pings
    print(f"ping matrix: replies received / {count} sent, from the pod of each row to the pod of each column")
    results = c.full_mesh_pings(count)
    names = [n.name for n in c.nodes]
    print("      " + "".join(name.rjust(8) for name in names))
    for a in c.nodes:
        cells = ["-" if a is b else f"{results[(a.index, b.index)].received}/{count}" for b in c.nodes]
        print(f"  {a.name:<4}" + "".join(cell.rjust(8) for cell in cells))
    lost = sum(r.lost for r in results.values())
    print(f"  {'all pods reach each other' if lost == 0 else f'{lost} pings lost'}")
    print()
    print(topology(c, args))
    print()
    hints(c, args)


def topology(c: object, args: argparse.Namespace) -> str:
    """The namespaces, devices and addresses the demo built, as a small picture."""
    from flannel_testkit.cluster import Cluster

    assert isinstance(c, Cluster)
    backend = BACKENDS[args.backend]
    device = f"flannel.{backend.get('VNI', 1)}" if backend["Type"] == "vxlan" else None
    lines = [
        f"topology ({args.backend}{', --ip-masq' if args.ip_masq else ''}):",
        "",
        f"  underlay  netns {c.ul_ns}: bridge br0, {c.underlay}.0/24",
        f"    |-- etcd  {c.etcd_ip}  (netns {c.etcd_ns})",
    ]
    for n in c.nodes:
        lines.append(
            f"    |-- {n.name}  eth0 {n.public_ip}  (netns {n.ns}; flanneld, lease service, backend)"
        )
        if device:
            overlay = (
                f"{device} {n.gateway_ip.rsplit('.', 1)[0]}.0/32 mtu {n.mtu}  <- VXLAN (UDP 8472) via eth0 ->"
            )
        else:
            overlay = "routes to each peer subnet via that peer's eth0 address (host-gw)"
        lines.append(f"    |     {overlay}")
        lines.append(
            f"    |     cni0 {n.gateway_ip}/{n.subnet.split('/')[1]}  (bridge, made by the CNI bridge plugin)"
        )
        lines.append(f"    |       `-- veth -- pod eth0 {n.pod_ip}  (netns {n.pod_ns}; flannel-cni ADD)")
    lines.append("    `-- (nothing on the host's own network)")
    return "\n".join(lines)


def hints(c: object, args: argparse.Namespace) -> None:
    from flannel_testkit.cluster import Cluster

    assert isinstance(c, Cluster)
    n1, n2 = c.node(1), c.node(min(2, len(c.nodes)))
    venv = (
        os.path.relpath(VENV / "bin", Path.cwd())
        if Path.cwd() in (ROOT, *ROOT.parents)
        else str(VENV / "bin")
    )
    backend = BACKENDS[args.backend]
    print("try (as root; the venv's tools by path, or `source .venv/bin/activate` first):")
    print(f"  {venv}/grpcurl -plaintext -unix {n1.lease_socket} flannel.v1.LeaseService/WatchLeases")
    print(f"  {venv}/grpcurl -plaintext -unix {n1.backend_socket} flannel.v1.BackendService/GetStatus")
    print(f"  ip netns exec {n1.ns} {venv}/flannelctl --run-dir {n1.run_dir} status")
    print(f"  ip netns exec {n1.pod_ns} ping {n2.pod_ip}")
    if backend["Type"] == "vxlan":
        device = f"flannel.{backend.get('VNI', 1)}"
        print(
            f"  ip -n {n1.ns} route; ip -n {n1.ns} neigh show dev {device}; "
            f"ip -n {n1.ns} -d link show {device}"
        )
        print(f"  ip netns exec {n1.ns} bridge fdb show dev {device}")
    else:
        print(f"  ip -n {n1.ns} route   # each peer subnet via the peer's eth0 address")
    print(f"  ip -n {n1.ns} link show master cni0; cat {n1.run_dir / 'cni' / 'flannel'}/*   # the CNI side")
    log = "lease" if args.no_flanneld else "flanneld"
    print(f"  cat {n1.run_dir / 'subnet.env'}; tail -f {STATE_DIR}/n1-{log}.log")
    print()
    print("the cluster keeps running; remove it with: tools/demo --down")


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("tools/demo: needs root (network namespaces)", file=sys.stderr)
        return 2
    into_venv()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `tools/demo | head` ends quietly; the cluster stays up
    if args.down:
        return down()
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
