"""flannel-py lease service: the node's subnet lease and the cluster's lease stream, unprivileged."""
