"""flanneld: starts the lease service and the backend with the right privileges and keeps them running."""
