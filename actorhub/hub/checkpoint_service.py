"""The Hub service's checkpoint RPCs, a part of `HubServicer` kept in a module of its own.

An actor's checkpoints (`worker/checkpoints.py`) are files beside the hub's store
(`runtime/checkpoint_files.py`), so they are as durable as the store and survive a hub restart.
A save answers once its file is on disk (written on a thread: an fsync must not stall the loop).
A save from an actor that is dead or unknown, or from an incarnation older than the actor's
current one (a process the hub replaced, still running), is refused: it must not overwrite what
the newer process saved. Files of actors that are dead or forgotten are swept at most once a
minute, on a save.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NoReturn

import grpc

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.records import DEAD, UnknownActor
from actorhub.runtime.checkpoint_files import CheckpointFiles
from actorhub.wire.server import abort

Context = grpc.aio.ServicerContext[Any, Any]

_SWEEP_EVERY_S = 60.0


class CheckpointRpcs:
    """Mixed into HubServicer, which provides the table and the loop."""

    _table: ActorTable
    _loop: asyncio.AbstractEventLoop
    checkpoints: CheckpointFiles | None = None  # set by the hub's main: beside the store
    _swept_at = 0.0

    async def SaveCheckpoint(self, request: hub_pb2.CheckpointSaveRequest, context: Context) -> common_pb2.Empty:
        files = await self._files(context)
        info = await self._actor(request.actor_id, context)
        if info.state == DEAD or request.incarnation < info.incarnation:
            why = "dead" if info.state == DEAD else "replaced by a newer process"
            await _refuse(context, f"actor {request.actor_id} (incarnation {request.incarnation}) may no longer "
                                   f"checkpoint: it is {why}")
        await self._loop.run_in_executor(None, files.save, request.actor_id, request.state)
        if time.monotonic() - self._swept_at >= _SWEEP_EVERY_S:
            self._swept_at = time.monotonic()
            self._loop.run_in_executor(None, self._sweep, files)
        return common_pb2.Empty()

    async def LoadCheckpoint(
        self, request: hub_pb2.CheckpointLoadRequest, context: Context
    ) -> hub_pb2.CheckpointLoadReply:
        files = await self._files(context)
        await self._actor(request.actor_id, context)
        state = await self._loop.run_in_executor(None, files.load, request.actor_id)
        return hub_pb2.CheckpointLoadReply(found=state is not None, state=state or b"")

    async def _files(self, context: Context) -> CheckpointFiles:
        if self.checkpoints is None:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "this hub keeps no checkpoints")
        return self.checkpoints

    async def _actor(self, actor_id: str, context: Context) -> common_pb2.ActorInfo:
        try:
            return self._table.get_actor(actor_id)
        except UnknownActor:
            await _refuse(context, f"actor {actor_id} is unknown")

    def _sweep(self, files: CheckpointFiles) -> None:
        for actor_id in files.actor_ids():
            try:
                dead = self._table.get_actor(actor_id).state == DEAD
            except UnknownActor:
                dead = True
            if dead:
                files.delete(actor_id)


async def _refuse(context: Context, message: str) -> NoReturn:
    await abort(context, grpc.StatusCode.NOT_FOUND, message)
