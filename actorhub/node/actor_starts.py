"""StartActor and KillWorker on a node: a worker from the pool runs the actor's constructor.

A start is a task on the node agent's loop, shielded from its call's cancellation: a caller that
gives up (its deadline, the hub's end) does not interrupt a start half way, which would leave a
worker in an unknown state; the start finishes and the hub kills what it no longer wants. A
StartActor repeated for the same (actor, incarnation), as a restarted hub sends it, joins the
start under way: one instance, never two.

The constructor's call to the worker ends when the worker answers or when the zygote reports
the worker's exit, whichever comes first: a killed worker's socket can stay open (a process it
started may hold it until its group is killed), and the death must not wait on it.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from actorhub._proto.v1 import node_pb2
from actorhub.config import Config
from actorhub.exceptions import ActorUnavailableError, RpcFailedError, RuntimeEnvSetupError
from actorhub.node.env_pools import NodeWorkerPools
from actorhub.node.workers import PoolError, State, Worker
from actorhub.wire.errors import ErrorKind, system_error_info
from actorhub.wire.transport import AsyncChannelPool
from actorhub.wire.worker import AsyncWorkerClient

log = logging.getLogger(__name__)

StartKey = tuple[str, int]  # (actor id, incarnation)
# How long a start waits for its worker's exit to be reported: as long as the constructor's call
# may take; the call's own deadline ends the wait first.
_EXIT_WAIT_S = 24 * 3600.0


class ActorStarts:
    def __init__(self, pools: NodeWorkerPools, worker_channels: AsyncChannelPool, config: Config, node_id: str) -> None:
        self._pools = pools
        self._worker_channels = worker_channels  # the loop's only
        self._config = config
        self._node_id = node_id
        self._starts: dict[StartKey, asyncio.Task[node_pb2.NodeStartActorReply]] = {}

    async def start(self, request: node_pb2.NodeStartActorRequest) -> node_pb2.NodeStartActorReply:
        key = (request.spec.actor_id, request.incarnation)
        task = self._starts.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._start(request))
            self._starts[key] = task
            task.add_done_callback(partial(self._done, key))
        else:
            log.info("StartActor for actor %s (incarnation %d) joins the start under way", *key)
        return await asyncio.shield(task)

    async def kill(self, request: node_pb2.KillWorkerRequest) -> None:
        found = self._pools.find_actor(request.actor_id, request.incarnation)
        if found is None:
            return  # already gone, or never here: killing is idempotent
        pool, worker = found
        pool.kill(worker)
        if not await pool.wait_exit(worker, self._config.kill_grace_s):
            log.warning("worker %s (pid %d) of actor %s did not exit within %g s of SIGKILL",
                        worker.worker_id, worker.pid, request.actor_id, self._config.kill_grace_s)

    async def close(self) -> None:
        for task in list(self._starts.values()):
            task.cancel()
        await self._worker_channels.close()

    def _done(self, key: StartKey, task: asyncio.Task[node_pb2.NodeStartActorReply]) -> None:
        if self._starts.get(key) is task:
            del self._starts[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("StartActor failed unexpectedly", exc_info=error)

    async def _start(self, request: node_pb2.NodeStartActorRequest) -> node_pb2.NodeStartActorReply:
        spec = request.spec
        existing = self._pools.find_actor(spec.actor_id, request.incarnation)
        if existing is not None and existing[1].state is State.ACTOR:
            return _ok(existing[1])  # a retried StartActor for an actor this node already runs
        try:
            # Its runtime_env's packages and pip environment, made ready here first.
            pool = await self._pools.for_env(spec.runtime_env)
        except RuntimeEnvSetupError as e:
            return node_pb2.NodeStartActorReply(ok=False, error=system_error_info(str(e), ErrorKind.RUNTIME_ENV_SETUP))
        try:
            worker = await pool.acquire(
                spec.actor_id, request.incarnation, spec.num_cpus, self._config.connect_timeout_s)
        except PoolError as e:
            return _failed(str(e), actor_died=False)
        worker.gpu_ids = tuple(request.gpu_ids)
        client = AsyncWorkerClient(self._worker_channels, worker.address, self._config.deadlines)
        constructing = asyncio.ensure_future(client.start_actor(spec, request.incarnation, self._node_id,
                                                                request.gpu_ids))
        exited = asyncio.ensure_future(pool.wait_exit(worker, _EXIT_WAIT_S))
        try:
            # A constructor may legitimately take long (actor_start_s); KillWorker interrupts it.
            await asyncio.wait((constructing, exited), return_when=asyncio.FIRST_COMPLETED)
            if not constructing.done():
                constructing.cancel()
                return _died_in_constructor(spec.class_name, worker, "its exit was reported")
            reply = constructing.result()
        except (RpcFailedError, ActorUnavailableError) as e:
            pool.kill(worker)
            await pool.wait_exit(worker, self._config.kill_grace_s)
            return _died_in_constructor(spec.class_name, worker, str(e))
        finally:
            exited.cancel()
            # This node never calls the worker again: no channel (and socket) kept per actor.
            await self._worker_channels.discard(worker.address)
        if not reply.ok:
            # The constructor raised: the process may hold half-built state; never reuse it.
            pool.kill(worker)
            return node_pb2.NodeStartActorReply(ok=False, error=reply.error)
        if not pool.activate(worker):
            return _failed(f"the worker process died right after the constructor ({worker.describe_exit()})",
                           actor_died=True)
        return _ok(worker)


def _died_in_constructor(class_name: str, worker: Worker, how: str) -> node_pb2.NodeStartActorReply:
    log.info("worker %s died in %s's constructor: %s (%s)", worker.worker_id, class_name, worker.describe_exit(), how)
    return _failed(f"the worker process died while running the constructor ({worker.describe_exit()})",
                   actor_died=True)


def _ok(worker: Worker) -> node_pb2.NodeStartActorReply:
    return node_pb2.NodeStartActorReply(ok=True, address=worker.address, worker_id=worker.worker_id, pid=worker.pid)


def _failed(message: str, *, actor_died: bool) -> node_pb2.NodeStartActorReply:
    kind = ErrorKind.ACTOR_DIED if actor_died else ErrorKind.SYSTEM
    return node_pb2.NodeStartActorReply(ok=False, error=system_error_info(message, kind))
