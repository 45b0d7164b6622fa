"""Apply operations to the kernel: netlink message templates in bulk, ``wg set`` for WireGuard peers.

:class:`TemplateApplier` sends pyroute2-encoded templates, many per ``sendmsg`` (about 10x faster than
one pyroute2 request per op). A failing operation is recorded and the others still run.

:class:`NetlinkKernel` is the real :class:`~backend_service.kernel.model.Kernel`: it reads with
:func:`~backend_service.kernel.read.read_owned` and applies with a :class:`TemplateApplier` and ``wg``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import weakref
from collections.abc import Iterable, Sequence

from pyroute2.iproute.linux import AsyncIPRoute

from ..desired import WgPeer
from . import wgctl
from .links import LinkIndexes
from .model import DELETE, ApplyResult, Expected, KernelCheck, KernelError, KernelSnapshot, Op, OpFailure
from .netlink_fast import CHUNK_BYTES, MessageEncoder, open_netlink_socket, send_batch
from .read import check_kernel, read_owned

log = logging.getLogger(__name__)

INLINE = 64
"""Messages that :meth:`TemplateApplier.apply` sends from the event loop itself (more go from a thread)."""


class TemplateApplier:
    """Applies ops as pyroute2-encoded message templates, up to ``chunk_bytes`` per ``sendmsg``, the
    refusals read after each (:func:`~backend_service.kernel.netlink_fast.send_batch`).

    Netlink *replace* (create or replace) for every write; a delete of something already gone
    counts as done. Without pyroute2's per-request encoding cost; see
    :mod:`backend_service.kernel.netlink_fast`. The kernel carries out one socket's messages in order,
    so the phase order of ``ops`` (FDB, neighbours, then routes) is kept without waiting between phases.

    What a small batch (a delta) would otherwise pay more for than for its messages is kept between
    batches: the device indexes (a pyroute2 link lookup each), until an op fails or :meth:`learn` brings
    fresher ones; and the socket, until a batch fails. A large batch is sent from a worker thread so
    that the event loop stays free; up to :data:`INLINE` messages (the kernel answers them in
    microseconds) are sent from the loop, which is cheaper than handing them to a thread.
    """

    def __init__(self, ipr: AsyncIPRoute, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._ipr = ipr
        self._chunk_bytes = chunk_bytes
        self._encoder = MessageEncoder()
        self._indexes = LinkIndexes(ipr)
        self._seq = 0
        self._sock: socket.socket | None = None
        self._closer: weakref.finalize[[], TemplateApplier] | None = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = open_netlink_socket(self._ipr)
            self._closer = weakref.finalize(self, self._sock.close)
        return self._sock

    def close(self) -> None:
        """Close the socket (a new one is opened if the applier is used again)."""
        if self._closer is not None:
            self._closer()
        self._sock = self._closer = None

    def learn(self, links: dict[int, str]) -> None:
        """The devices as a read of the kernel just found them (ifindex → ifname)."""
        self._indexes.learn(links)

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        failed: dict[int, OpFailure] = {}
        messages: list[tuple[int, bytes]] = []
        by_seq: dict[int, int] = {}
        indexes, encode = self._indexes, self._encoder.encode
        for n, op in enumerate(ops):
            try:
                ifname = op.obj.ifname
                idx = (indexes.known(ifname) or await indexes.get(ifname)) if ifname else 0
                self._seq = seq = self._seq % 0x7FFFFFFF + 1
                messages.append((seq, encode(op, seq, idx)))
                by_seq[seq] = n
            except (KernelError, ValueError) as e:
                failed[n] = OpFailure(op, f"{type(e).__name__}: {e}")
        if messages:
            sock = self._socket()
            if len(messages) <= INLINE:
                errors = send_batch(sock, messages, self._chunk_bytes)
            else:
                errors = await asyncio.to_thread(send_batch, sock, messages, self._chunk_bytes)
            if errors:  # a socket that failed may hold answers not read: the next batch starts on a fresh one
                self.close()
            for seq, code in errors.items():
                n = by_seq[seq]
                op = ops[n]
                if op.action == DELETE and code in (errno.ENOENT, errno.ESRCH):
                    continue
                failed[n] = OpFailure(
                    op, f"netlink error {code} ({errno.errorcode.get(code, '?')}): {os.strerror(code)}"
                )
        failures = [failed[n] for n in sorted(failed)]
        if failures:  # perhaps a device was re-created (a new index): look every index up again
            self._indexes.clear()
        for f in failures:
            log.warning("kernel refused %s", f)
        return ApplyResult(applied=len(ops) - len(failures), failures=tuple(failures))


class NetlinkKernel:
    """The kernel of ``ipr``'s network namespace: :func:`~backend_service.kernel.read.read_owned` and a
    :class:`TemplateApplier`, and the peers of our WireGuard devices through ``wg``
    (:mod:`backend_service.kernel.wgctl`)."""

    def __init__(self, ipr: AsyncIPRoute) -> None:
        self._ipr = ipr
        self._applier = TemplateApplier(ipr)

    async def read(self, devices: Iterable[str], expect: Expected | None = None) -> KernelSnapshot:
        snapshot = await read_owned(self._ipr, devices, expect)
        self._applier.learn(snapshot.links)
        return snapshot

    async def check(self, devices: Iterable[str]) -> KernelCheck | None:
        devices = tuple(devices)
        if any(d in wgctl.DEVICES for d in devices):
            return None  # WireGuard peers: only a full read (through ``wg``) sees them
        check = await check_kernel(self._ipr, devices)
        self._applier.learn(check.links)
        return check

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """WireGuard peers first (one ``wg set`` per device), netlink ops, then WireGuard removals: the
        order :func:`~backend_service.kernel.diff.diff` gives, with each kind applied in bulk."""
        wg_first = [op for op in ops if isinstance(op.obj, WgPeer) and op.action != DELETE]
        wg_last = [op for op in ops if isinstance(op.obj, WgPeer) and op.action == DELETE]
        netlink = [op for op in ops if not isinstance(op.obj, WgPeer)]
        failures: list[OpFailure] = []
        failures += await _apply_wg(wg_first)
        result = await self._applier.apply(netlink) if netlink else ApplyResult(0, ())
        failures += result.failures
        failures += await _apply_wg(wg_last)
        return ApplyResult(applied=len(ops) - len(failures), failures=tuple(failures))


async def _apply_wg(ops: Sequence[Op]) -> list[OpFailure]:
    """One ``wg set`` per device for ``ops``; when it fails, every op in it failed."""
    by_device: dict[str, list[Op]] = {}
    for op in ops:
        by_device.setdefault(op.obj.ifname, []).append(op)
    failures: list[OpFailure] = []
    for device, device_ops in by_device.items():
        upserts = [op.obj for op in device_ops if op.action != DELETE and isinstance(op.obj, WgPeer)]
        removes = [
            op.obj.public_key for op in device_ops if op.action == DELETE and isinstance(op.obj, WgPeer)
        ]
        try:
            await wgctl.set_peers(device, upserts, removes)
        except wgctl.WgError as e:
            failures += [OpFailure(op, str(e)) for op in device_ops]
            log.warning("WireGuard device %s refused %d peer changes: %s", device, len(device_ops), e)
    return failures
