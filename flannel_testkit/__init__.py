"""Test harness shared by unit and end-to-end tests: real etcd, grpcurl, waiting helpers."""
