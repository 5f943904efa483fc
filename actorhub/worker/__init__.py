"""The worker process: the Worker gRPC service and the mailboxes that run an actor's calls."""
