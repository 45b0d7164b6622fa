"""flannel-py backend service: the dataplane (vxlan, host-gw, wireguard), the only process with CAP_NET_ADMIN.

A small controller (``controller``) runs two owned tasks: the ``session`` with the lease service
(which runs the ``follow``-er of the lease stream) and the ``reconciler``. The package stands on
floors, each importing only from the floors below it (an import-linter ``layers`` contract in
pyproject.toml checks it):

- ``__main__``; ``cleanup``, ``server``, ``session``; ``controller``; ``reconciler``; ``planner``;
- the backends, one package each (``vxlan/``, ``hostgw/``, ``wireguard/``: ``backend`` over its
  ``device`` and its pure ``desired`` state), ``masq`` (flannel's masquerade and forward rules) and
  ``validate`` (reject bad leases with reason codes);
- ``backend`` (the ``Backend`` protocol every backend implements);
- ``kernel/`` (the kernel model, the diff, reading and applying) and ``blackhole``;
- ``desired`` (routes, neighbours, FDB entries, WireGuard peers as values), ``leases`` (proto Lease →
  PeerLease), and at the bottom ``config``, ``node`` and the small leaves.
"""
