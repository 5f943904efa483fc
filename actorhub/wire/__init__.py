"""The wire: the only code that talks gRPC as a client. Channels that carry the cluster token,
deadlines, status codes mapped to actorhub's exceptions, errors as plain values and as protobuf
messages, the typed clients of the hub, node agents, workers and object stores with the
dataclasses they return, and the caller's side of an actor (call_state + call_stream)."""
