"""Prometheus metrics: what each process counts, each node's endpoint, the head's targets.

Import-free: the node agent imports `node_dir` before it forks its zygote.
"""
