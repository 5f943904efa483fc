"""The hub process (`python -m actorhub.hub`): the cluster's control plane. The actor table as
a state machine, jobs, nodes, the name directory's home, and the control store."""
