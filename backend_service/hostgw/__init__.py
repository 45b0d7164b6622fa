"""The host-gw backend: ``desired`` (a route per peer, pure) and ``backend``."""
