"""The node agent process (`python -m actorhub.node`): its gRPC service, the pool of
pre-started workers, and the zygote that forks them.

Kept free of imports: the agent spawns its zygote before it imports grpc.
"""
