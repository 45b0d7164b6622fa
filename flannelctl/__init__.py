"""flannelctl: look at a node's flannel-py services and dataplane from the command line.

It speaks only the contract (``flannel.v1`` over the unix sockets in ``--run-dir``, plus
``grpc.health.v1``) and reads the kernel of the current network namespace with ``ip -json`` and
``bridge -json``, which needs no privilege. Commands: ``leases``, ``watch``, ``status``, ``doctor``.

Exit status: 0 all is well, 1 a problem was found (``doctor``) or a service is unhealthy
(``status``), 2 a usage or connection error (the message names the socket).
"""
