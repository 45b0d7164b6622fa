"""flannel-py's backend conformance kit, a pytest plugin (entry point ``pytest11``).

Any backend that speaks ``flannel.v1`` must pass it. After ``pip install 'flannel-py[conformance]'``::

    pytest --flannel-backend-cmd "/usr/local/bin/my-backend --run-dir {run_dir}" \\
        --flannel-backend-config '{"Type": "my-type"}' --flannel-peer-backend-data '{"Key": "value"}'

runs the kit (``flannel_conformance/test_conformance.py``) against that backend: two nodes in network
namespaces on one underlay, a real etcd, the real lease service, and the backend under test holding
CAP_NET_ADMIN + CAP_NET_RAW only. It needs root, iproute2, util-linux's setpriv, ping and etcd.
Without ``--flannel-backend-cmd`` nothing is added to a pytest run; collected explicitly (as this
repository's own suite does) the kit runs against the built-in vxlan and host-gw backends.
"""
