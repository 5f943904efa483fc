"""The Hub service's graceful node drain (`actorhub drain NODE_ID`), a part of `HubServicer` kept
in a module of its own; the table's side is `hub/drain_table.py`, the worker's `worker/drain.py`.

`DrainNode` marks the node draining (nothing new is placed there from then on) and answers once
the node is removed. Meanwhile, on the hub's loop:
- each user actor on the node is drained through its worker (`Worker.DrainActor`, straight from
  the hub, which knows every worker's address): its calls under way end and their replies leave,
  the calls not started stay unanswered when it moves (they follow it: the caller sends them to
  the next incarnation without spending a retry) or are answered ActorUnavailableError naming the
  drain when it cannot move (not restartable, or no other node can take it now);
- once its worker says no call runs there any more, the actor restarts elsewhere without
  spending its restart budget (after a final checkpoint, which the new process restores), or
  ends DEAD, and the old worker is killed;
- the node's lease desk lends nothing new, and the tasks it lent to run to their end;
- at the deadline, or once nothing runs there, the node is removed: what still runs is lost as
  on a node's death (restartable actors restart elsewhere), the node is recorded as drained, and
  its agent is told to stop, which it does cleanly.
A second DrainNode for the same node joins the drain under way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from actorhub._proto.v1 import hub_pb2
from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.drain_table import DrainRefused, DrainTarget
from actorhub.hub.records import Decisions, UnknownNode, WorkerKill
from actorhub.wire.server import abort
from actorhub.wire.transport import AsyncChannelPool
from actorhub.wire.worker import AsyncWorkerClient

log = logging.getLogger("actorhub.hub")

Context = grpc.aio.ServicerContext[Any, Any]

# `actorhub drain` without --deadline: how long calls under way and tasks may take to end.
DEFAULT_DRAIN_DEADLINE_S = 30.0
# How often the drain looks for what is left on the node (actors that finished starting, loans).
_CHECK_S = 0.05


class _Tally:
    __slots__ = ("failed", "moved")

    def __init__(self) -> None:
        self.moved = 0
        self.failed = 0


class NodeDrainRpcs:
    """Mixed into HubServicer, which provides the table, the loop and the ways to act."""

    _table: ActorTable
    _loop: asyncio.AbstractEventLoop
    _channels: AsyncChannelPool
    _deadlines: RpcDeadlines
    _node_drains: dict[str, asyncio.Task[hub_pb2.DrainNodeReply]] | None = None

    if TYPE_CHECKING:
        def _carry_out(self, decisions: Decisions) -> int: ...

        async def _written(self, ticket: int) -> None: ...

        async def _kill_worker(self, kill: WorkerKill) -> None: ...

        async def _kill_and_report(self, kill: WorkerKill, cause: str, ticket: int = 0) -> None: ...

        async def _stop_node(self, address: str) -> None: ...

    async def DrainNode(self, request: hub_pb2.DrainNodeRequest, context: Context) -> hub_pb2.DrainNodeReply:
        node_id = request.node_id
        drains = self._node_drains
        if drains is None:
            drains = self._node_drains = {}
        drain = drains.get(node_id)
        if drain is None:
            try:
                self._table.begin_drain(node_id)
            except UnknownNode as err:
                await abort(context, grpc.StatusCode.NOT_FOUND, str(err))
            except DrainRefused as err:
                await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
            deadline_s = request.deadline_s if request.deadline_s > 0 else DEFAULT_DRAIN_DEADLINE_S
            log.info("draining node %s (deadline %.0f s)", node_id, deadline_s)
            drain = drains[node_id] = self._loop.create_task(self._drain(node_id, deadline_s))
            drain.add_done_callback(lambda _: drains.pop(node_id, None))
        # Shielded: a caller that gives up does not stop the drain half way.
        return await asyncio.shield(drain)

    async def _drain(self, node_id: str, deadline_s: float) -> hub_pb2.DrainNodeReply:
        end = self._loop.time() + deadline_s
        tally = _Tally()
        actors: dict[str, asyncio.Task[None]] = {}
        while True:
            for target in self._table.drain_targets(node_id, set(actors)):
                actors[target.actor_id] = self._loop.create_task(
                    self._drain_actor(node_id, target, end - self._loop.time(), tally))
            if all(t.done() for t in actors.values()) and not self._table.node_busy(node_id):
                break
            if self._loop.time() >= end:
                break
            await asyncio.sleep(_CHECK_S)
        for task in actors.values():
            task.cancel()
        if actors:
            await asyncio.wait(list(actors.values()))
        killed = self._table.actors_on(node_id)
        decisions, address = self._table.remove_drained_node(node_id)
        await self._written(self._carry_out(decisions))
        if address:
            await self._stop_node(address)
        log.info("node %s drained: %d actors moved, %d failed, %d ended at the deadline",
                 node_id, tally.moved, tally.failed, killed)
        return hub_pb2.DrainNodeReply(moved=tally.moved, failed=tally.failed, killed=killed)

    async def _drain_actor(self, node_id: str, target: DrainTarget, timeout_s: float, tally: _Tally) -> None:
        reason = (f"node {node_id} is draining: the actor's calls that had not started were not run"
                  + ("" if target.move else " (the actor cannot move to another node)"))
        client = AsyncWorkerClient(self._channels, target.address, self._deadlines)
        try:
            ended = await client.drain_actor(target.actor_id, target.incarnation, target.move, reason,
                                             max(0.0, timeout_s))
        except RpcFailedError as err:
            log.warning("draining actor %s on node %s: %s", target.actor_id, node_id, err)
            ended = False
        finally:
            await self._channels.discard(target.address)
        if not ended:
            return  # still running at the deadline: the node's removal ends it
        decisions, kill, restarts = self._table.actor_drained(target.actor_id, target.incarnation, node_id)
        if kill is None:
            return
        ticket = self._carry_out(decisions)
        if target.move and restarts:
            tally.moved += 1
        else:
            tally.failed += 1
        if restarts:
            await self._written(ticket)
            await self._kill_worker(kill)  # its exit report finds a newer incarnation: stale
        else:
            await self._kill_and_report(kill, f"its node {node_id} was drained", ticket)
