"""LeaseDesk: one actor per node that lends task executors, one CPU's worth (or more) each.

A lease is an actor call (`lease`), and so is its return (`release`). A caller keeps a lease
for its following tasks while it has work. A task blocked in get() gives its CPU back until it
resumes, so a task waiting on subtasks never starves them. Leases of a caller that died are
reclaimed: the desk pings lease holders it has not heard from.

CPUs that actors on the node reserve (`num_cpus=`) are not lent: the desk follows the hub's
count of them, every second, so tasks and reserving actors share the node's CPUs as in Ray.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

from actorhub._transport import peer_is_gone
from actorhub.util import SYSTEM_NAMESPACE
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy

_HOLDER_CHECK_S = 1.0


def desk_name(node_id: str) -> str:
    return f"lease-desk-{node_id}"


class LeaseDesk:
    def __init__(self, node_id: str, num_cpus: float) -> None:
        self._node_id = node_id
        self._total = num_cpus
        self._free = num_cpus
        self._held_by_actors = 0.0  # CPUs actors on this node reserve, as the hub counts them
        self._idle: list[Any] = []
        self._handles: dict[str, Any] = {}
        self._leased: dict[str, tuple[float, str]] = {}  # executor id -> (cpus, holder address)
        self._blocked: set[str] = set()
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._watcher: asyncio.Task[None] | None = None
        for _ in range(max(1, math.ceil(num_cpus))):
            self._idle.append(self._new_executor())
        self._apply_actor_reservations(self._actor_reservations())

    def _new_executor(self) -> Any:
        from actorhub.tasks._executor import TaskExecutor

        from actorhub._actor_class import ActorClass
        from actorhub._options import ActorOptions

        executor_class = ActorClass(
            TaskExecutor,
            ActorOptions(
                namespace=SYSTEM_NAMESPACE,
                lifetime="detached",
                max_restarts=-1,  # a task that kills its worker gets a fresh one on the same lease
                max_concurrency=4,  # room for cancel() while a task runs
                scheduling_strategy=NodeAffinitySchedulingStrategy(self._node_id),
            ),
        )
        from actorhub._runtime import current

        handle = executor_class.remote_in(current(), desk_name(self._node_id), SYSTEM_NAMESPACE)
        self._handles[handle.actor_id] = handle
        return handle

    async def lease(self, num_cpus: float, holder: str) -> Any:
        if num_cpus > self._total:
            raise ValueError(f"a task needs {num_cpus} CPUs but node {self._node_id} has {self._total}")
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_holders())
        if self._waiters or self._free < num_cpus:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((num_cpus, granted))
            await granted
        else:
            self._free -= num_cpus
        executor = self._idle.pop() if self._idle else self._new_executor()
        self._leased[executor.actor_id] = (num_cpus, holder)
        return executor

    async def release(self, executor_id: str) -> None:
        self._give_back(executor_id)

    def _give_back(self, executor_id: str) -> None:
        lease = self._leased.pop(executor_id, None)
        if lease is None:
            return
        if executor_id in self._blocked:
            self._blocked.discard(executor_id)  # its CPU was already given back
        else:
            self._free += lease[0]
        self._idle.append(self._handles[executor_id])
        self._grant()

    async def block(self, executor_id: str) -> None:
        lease = self._leased.get(executor_id)
        if lease is not None and executor_id not in self._blocked:
            self._blocked.add(executor_id)
            self._free += lease[0]
            self._grant()

    async def unblock(self, executor_id: str) -> None:
        lease = self._leased.get(executor_id)
        if lease is not None and executor_id in self._blocked:
            self._blocked.discard(executor_id)
            # May go below zero for a while, as in Ray: the resumed task must not wait again.
            self._free -= lease[0]

    async def stats(self) -> dict[str, float]:
        return {
            "total": self._total, "free": self._free, "leased": len(self._leased), "idle": len(self._idle),
            "held_by_actors": self._held_by_actors,
        }

    def _actor_reservations(self) -> float | None:
        """The CPUs actors reserve on this node, by the hub's count (None: the hub cannot say)."""
        from actorhub._proto.v1 import common_pb2
        from actorhub._runtime import current

        try:
            status = current().hub.GetClusterStatus(common_pb2.Empty(), timeout=10)
        except Exception:
            return None
        node = next((n for n in status.nodes if n.node_id == self._node_id), None)
        return None if node is None else max(0.0, node.num_cpus - node.available_cpus)

    def _apply_actor_reservations(self, held: float | None) -> None:
        """On the desk's loop: take what actors reserve out of what may be lent, or give it back."""
        if held is None:
            return  # the last count stands
        self._free -= held - self._held_by_actors
        self._held_by_actors = held
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._free >= self._waiters[0][0]:
            cpus, granted = self._waiters.popleft()
            if granted.cancelled():
                continue
            self._free -= cpus
            granted.set_result(None)

    async def _watch_holders(self) -> None:
        from actorhub._runtime import current

        runtime = current()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_HOLDER_CHECK_S)
            self._apply_actor_reservations(await loop.run_in_executor(None, self._actor_reservations))
            holders = {holder for _, holder in self._leased.values()}
            for holder in holders:
                gone = await loop.run_in_executor(None, peer_is_gone, runtime.channels.get(holder))
                if gone:
                    for executor_id, (_, who) in list(self._leased.items()):
                        if who == holder:
                            self._give_back(executor_id)

