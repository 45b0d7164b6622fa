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
from collections.abc import Awaitable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from pyroute2.iproute.linux import AsyncIPRoute

from ..desired import WgPeer
from . import wgctl
from .links import LinkIndexes
from .model import DELETE, ApplyResult, Expected, KernelCheck, KernelError, KernelSnapshot, Op, OpFailure
from .netlink_fast import CHUNK_BYTES, MessageEncoder, open_netlink_socket, send_batch
from .read import check_kernel, read_owned

log = logging.getLogger(__name__)

INLINE = 64
"""Messages that :meth:`TemplateApplier.submit` sends from the event loop itself when the sending thread is
idle (more go to the thread)."""


class TemplateApplier:
    """Applies ops as pyroute2-encoded message templates, up to ``chunk_bytes`` per ``sendmsg``, the
    refusals read after each (:func:`~backend_service.kernel.netlink_fast.send_batch`).

    Netlink *replace* (create or replace) for every write; a delete of something already gone
    counts as done. Without pyroute2's per-request encoding cost; see
    :mod:`backend_service.kernel.netlink_fast`. The kernel carries out one socket's messages in order,
    so the phase order of ``ops`` (FDB, neighbours, then routes) is kept without waiting between phases.

    Batches are carried out in the order they are submitted, one after the other, by one sending thread
    (the kernel's work runs in that thread's syscalls, which give the GIL up): :meth:`submit` returns once
    a batch is handed over, so a caller can plan and hand over the next while the kernel carries out this
    one, and the kernel goes from one batch to the next without waiting for the event loop. Up to
    :data:`INLINE` messages (the kernel answers them in microseconds) are sent from the loop itself when
    the thread has nothing to do, which is cheaper than handing them over.

    What a small batch (a delta) would otherwise pay more for than for its messages is kept between
    batches: the device indexes (a pyroute2 link lookup each), until an op fails or :meth:`learn` brings
    fresher ones; and the socket (opened from the loop: pyroute2's socket, whose namespace it takes, is
    per thread). Answers a failed batch left unread (a timeout, ENOBUFS) name sequence numbers that no
    later batch uses, and :func:`~backend_service.kernel.netlink_fast.send_batch` skips them.
    """

    def __init__(self, ipr: AsyncIPRoute, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._ipr = ipr
        self._chunk_bytes = chunk_bytes
        self._encoder = MessageEncoder()
        self._indexes = LinkIndexes(ipr)
        self._seq = 0
        self._sock: socket.socket | None = None
        self._closer: weakref.finalize[[], TemplateApplier] | None = None
        self._handover = asyncio.Lock()  # batches reach the sender in the order submit was called
        self._sender: ThreadPoolExecutor | None = None
        self._handed = 0  # batches handed to the sending thread (counted by the loop)
        self._sent = 0  # of which the thread is done with (counted by the thread)

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
        """Carry out ``ops`` (after every batch submitted before)."""
        return await (await self.submit(ops))

    async def submit(self, ops: Sequence[Op]) -> Awaitable[ApplyResult]:
        """Encode ``ops`` and hand them to the kernel after every batch submitted before; returns once
        they are handed over, with what to await for their result."""
        async with self._handover:
            failed, messages, by_seq = await self._encode(ops)
            if not messages:
                errors: dict[int, int] | asyncio.Future[dict[int, int]] = {}
            elif len(messages) <= INLINE and self._sent == self._handed:
                errors = send_batch(self._socket(), messages, self._chunk_bytes)
            else:
                if self._sender is None:
                    self._sender = ThreadPoolExecutor(1, thread_name_prefix="netlink-send")
                    weakref.finalize(self, self._sender.shutdown, wait=False)
                self._handed += 1
                errors = asyncio.get_running_loop().run_in_executor(
                    self._sender, self._send, self._socket(), messages
                )
        return self._result(ops, failed, by_seq, errors)

    async def _encode(
        self, ops: Sequence[Op]
    ) -> tuple[dict[int, OpFailure], list[tuple[int, bytes]], dict[int, int]]:
        """The messages of ``ops`` with their sequence numbers, which op each is, and the ops that cannot be
        sent at all (no such device)."""
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
        return failed, messages, by_seq

    def _send(self, sock: socket.socket, messages: list[tuple[int, bytes]]) -> dict[int, int]:
        """Send one batch, in the sending thread."""
        try:
            return send_batch(sock, messages, self._chunk_bytes)
        finally:
            self._sent += 1

    async def _result(
        self,
        ops: Sequence[Op],
        failed: dict[int, OpFailure],
        by_seq: dict[int, int],
        sending: dict[int, int] | asyncio.Future[dict[int, int]],
    ) -> ApplyResult:
        errors = sending if isinstance(sending, dict) else await sending
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
        self._order = asyncio.Lock()  # FIFO: batches are carried out in the order apply was called

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
        order :func:`~backend_service.kernel.diff.diff` gives, with each kind applied in bulk. Concurrent
        calls are carried out in the order they were made: a batch of netlink ops alone is handed to the
        applier's sending thread in turn and carried out there while the caller goes on (the reconciler
        plans the next part of a snapshot meanwhile); a batch with WireGuard peers runs whole in turn."""
        wg_first = [op for op in ops if isinstance(op.obj, WgPeer) and op.action != DELETE]
        wg_last = [op for op in ops if isinstance(op.obj, WgPeer) and op.action == DELETE]
        netlink = [op for op in ops if not isinstance(op.obj, WgPeer)]
        if not wg_first and not wg_last:
            async with self._order:
                sent = await self._applier.submit(netlink)
            return await sent
        async with self._order:
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
