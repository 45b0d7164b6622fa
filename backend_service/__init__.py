"""flannel-py backend service: the dataplane (vxlan, host-gw), the only process with CAP_NET_ADMIN."""
