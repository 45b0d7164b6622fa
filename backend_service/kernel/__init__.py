"""The kernel floor: what every backend and the reconciler use to read and change the kernel.

``model`` (the objects we own as read back, operations, results; pure), ``diff`` (desired state against
the kernel: the operations; pure), ``netlink_fast`` (raw netlink: message templates, pipelined sends,
lean dumps), ``links`` (link look-ups, a device's address), ``wgctl`` (WireGuard devices through
``wg``), ``read`` (what we own), ``apply`` (carry operations out; :class:`~backend_service.kernel.apply.NetlinkKernel`).
Nothing here imports a backend.
"""
