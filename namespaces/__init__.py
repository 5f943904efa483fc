"""The control plane: namespaces, the name directory, actor and job tables."""
