"""Starting, finding and stopping a cluster on this host: session directories and the launcher
of hub and node-agent processes."""
