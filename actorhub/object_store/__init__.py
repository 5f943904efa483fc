"""The node's shared-memory object store: the arena and its allocator, the store a node agent
hosts, transfers between nodes, and the client every process on the node uses."""
