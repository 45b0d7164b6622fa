"""flannel-py backend service: the dataplane (vxlan, host-gw), the only process with CAP_NET_ADMIN.

The data path, one module per step, each calling only the ones below it:
``config`` (network config → typed options) → ``leases`` (proto Lease → PeerLease) →
``validate`` (reject bad leases with reason codes) → ``vxlan`` / ``hostgw`` (behind the
``backend.Backend`` protocol: devices, peers → ``desired`` state) → ``kernel`` (read what we own,
apply ops) with ``diff`` in between; ``dataplane.Dataplane.reconcile`` runs them in order.
``masq`` keeps flannel's masquerade rules.
"""
