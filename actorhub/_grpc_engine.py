"""Which I/O engine gRPC runs on in actorhub's processes: its poller, not its EventEngine.

With the EventEngine (gRPC's default since 1.6x), every message a stream reads or writes
crosses one more thread: the engine's own threads do the socket I/O and hand each event to the
thread that polls the completion queue. For small messages that hop is most of the cost: on the
2-CPU machine a raw gRPC stream echo made 3,300 round trips per second on the EventEngine and
5,000 on the poller, with a third less CPU on each side, and `1:1 actor calls sync` 15-25% more.

gRPC reads `GRPC_EXPERIMENTS` once, when it is first imported, so the default has to be in the
environment before that: `actorhub/__init__` applies it before anything imports grpc, and child
processes (hub, node agents, zygote, workers) inherit it. A value the user set is kept as it is;
a process that imported grpc before actorhub keeps the engine it started with.
"""

from __future__ import annotations

import os

# The experiments that put client channels and servers on the EventEngine.
POLLER_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def prefer_poller() -> None:
    """Default GRPC_EXPERIMENTS to the poller (a no-op when the user set it)."""
    os.environ.setdefault("GRPC_EXPERIMENTS", POLLER_EXPERIMENTS)
