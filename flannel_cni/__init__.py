"""``flannel-cni``: flannel's CNI plugin for hosts that run Python (podman, containerd on plain hosts).

A meta-plugin, as flannel's own (github flannel-io/cni-plugin): it reads the node's ``subnet.env``
(written by the lease service), turns it into a delegate network config (by default the ``bridge``
plugin with ``host-local`` IPAM), saves that config per container for DEL, and runs the delegate.
Its input is flannel's: ``subnetFile``, ``dataDir``, ``delegate``, ``ipam``, ``runtimeConfig``.

Modules: ``errors`` (CNI error codes), ``netconf`` (the plugin's own config), ``subnetenv``
(``subnet.env``), ``delegate`` (the delegate config, pure), ``invoke`` (running delegate plugins),
``scratch`` (the per-container saved config), ``__main__`` (the CNI commands).
It imports only the standard library: a runtime starts it once per pod.
"""

PLUGIN_VERSION = "0.1.0"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
