"""The vxlan backend: ``device`` (the VXLAN device), ``desired`` (per-peer kernel objects, pure), ``backend``."""
