"""The Hub service's placement group RPCs, a part of `HubServicer` kept in a module of its own.

The decisions are the table's (`placement_group_table.py`); these handlers carry them out as
the actor RPCs do: a creation or removal answers once the store has it, and the actors a
removal kills are killed by the service's usual path. WaitPlacementGroup is a long poll on a
future the table wakes, holding no thread.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, NoReturn

import grpc

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.placement_group_table import UnknownGroup
from actorhub.hub.records import Decisions, HubShuttingDown, InvalidSpec, NameTaken
from actorhub.wire.server import abort

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS: dict[type[Exception], grpc.StatusCode] = {
    UnknownGroup: grpc.StatusCode.NOT_FOUND,
    InvalidSpec: grpc.StatusCode.INVALID_ARGUMENT,
    NameTaken: grpc.StatusCode.ALREADY_EXISTS,
    HubShuttingDown: grpc.StatusCode.UNAVAILABLE,
}
_GROUP_ERRORS = tuple(_STATUS)


async def _abort(context: Context, err: Exception) -> NoReturn:
    await abort(context, _STATUS.get(type(err), grpc.StatusCode.INTERNAL), str(err))


class PlacementGroupRpcs:
    """Mixed into HubServicer, which provides the table, the loop and the carrying out."""

    _table: ActorTable
    _loop: asyncio.AbstractEventLoop

    def _carry_out(self, decisions: Decisions) -> int:
        raise NotImplementedError

    async def _written(self, ticket: int) -> None:
        raise NotImplementedError

    def _wake_soon(self, woke: asyncio.Future[None]) -> None:
        raise NotImplementedError

    async def CreatePlacementGroup(
        self, request: hub_pb2.PlacementGroupSpec, context: Context,
    ) -> hub_pb2.PlacementGroupInfo:
        try:
            if self._table.shutting_down:
                raise HubShuttingDown("the hub is shutting down")
            info, decisions = self._table.create_group(request)
        except _GROUP_ERRORS as err:
            await _abort(context, err)
        await self._written(self._carry_out(decisions))
        return info

    async def RemovePlacementGroup(
        self, request: hub_pb2.PlacementGroupRemoveRequest, context: Context,
    ) -> common_pb2.Empty:
        try:
            decisions = self._table.remove_group(request.placement_group_id)
        except _GROUP_ERRORS as err:
            await _abort(context, err)
        await self._written(self._carry_out(decisions))
        return common_pb2.Empty()

    async def WaitPlacementGroup(
        self, request: hub_pb2.PlacementGroupWaitRequest, context: Context,
    ) -> hub_pb2.PlacementGroupInfo:
        loop = self._loop
        deadline = loop.time() + max(0.0, request.timeout_s)
        while True:
            woke: asyncio.Future[None] = loop.create_future()
            try:
                info, key = self._table.watch_group(request.placement_group_id, partial(self._wake_soon, woke))
            except _GROUP_ERRORS as err:
                await _abort(context, err)
            if key is None:
                return info
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return info
                await asyncio.wait((woke,), timeout=remaining)
            finally:
                self._table.unwatch_group(request.placement_group_id, key)

    async def GetPlacementGroup(
        self, request: hub_pb2.PlacementGroupGetRequest, context: Context,
    ) -> hub_pb2.PlacementGroupInfo:
        try:
            return self._table.find_group(request.placement_group_id, request.name, request.namespace)
        except _GROUP_ERRORS as err:
            await _abort(context, err)

    async def PlacementGroupBatch(
        self, request: hub_pb2.PlacementGroupOps, context: Context,
    ) -> hub_pb2.PlacementGroupOpResults:
        """Each op as its own RPC would do it, one write for all: answered once on disk."""
        if self._table.shutting_down:
            await _abort(context, HubShuttingDown("the hub is shutting down"))
        merged = Decisions()
        results = []
        for op in request.ops:
            result = hub_pb2.PlacementGroupOpResult()
            try:
                if op.WhichOneof("op") == "create":
                    info, decisions = self._table.create_group(op.create)
                    result.info.CopyFrom(info)
                else:
                    decisions = self._table.remove_group(op.remove)
                merged.merge(decisions)
            except _GROUP_ERRORS as err:
                result.error = str(err)
                result.not_found = isinstance(err, UnknownGroup)
            results.append(result)
        await self._written(self._carry_out(merged))
        return hub_pb2.PlacementGroupOpResults(results=results)

    async def ListPlacementGroups(self, request: common_pb2.Empty, context: Context) -> hub_pb2.PlacementGroupList:
        return hub_pb2.PlacementGroupList(groups=self._table.list_groups())
