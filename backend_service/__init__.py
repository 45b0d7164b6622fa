"""flannel-py backend service: the dataplane (vxlan, host-gw), the only process with CAP_NET_ADMIN.

A small controller (``controller``) runs two owned tasks: the ``session`` with the lease service
(which runs the ``follow``-er of the lease stream) and the ``reconciler``. The data path, one module
per step, each calling only the ones below it: ``config`` (network config → typed options) →
``leases`` (proto Lease → PeerLease) → ``validate`` (reject bad leases with reason codes) →
``vxlan`` / ``hostgw`` (behind the ``backend.Backend`` protocol: devices, peers → ``desired``
state) → ``diff`` against what the kernel holds → ``kernel`` (read what we own, apply ops);
``planner`` runs those steps for every peer or for a delta's peers. ``masq`` keeps flannel's
masquerade rules.
"""
