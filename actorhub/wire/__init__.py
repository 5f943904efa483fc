"""The wire: the only code that talks gRPC as a client. Channels that carry the cluster token,
deadlines, status codes mapped to actorhub's exceptions, errors as protobuf messages, and the
typed clients of the hub, node agents, workers and object stores."""
