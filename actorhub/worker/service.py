"""The Worker service, served by every worker process and every driver.

A worker is forked idle by its node's zygote, registers with the node agent, and becomes an
actor when the node sends StartActor: only then is its identity known, so that is when its
Runtime is built (on the endpoint it served StartActor from) and bound to this service, once.
A driver serves the same service so other processes can read the objects it owns (it never
hosts an actor); init() binds its runtime once the job is registered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import grpc

from actorhub._proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from actorhub.exceptions import ObjectLostError, RpcFailedError
from actorhub.runtime import serialization as _serialization
from actorhub.runtime.endpoint import Endpoint
from actorhub.runtime.identity import Identity
from actorhub.runtime.ids import split_store_id
from actorhub.runtime.object_ref import capturing_refs
from actorhub.runtime.object_table import ObjectTable
from actorhub.runtime.runtime import Runtime, set_current
from actorhub.wire.errors import ErrorKind, error_to_proto, system_error_info, to_error_info
from actorhub.wire.node import NodeClient
from actorhub.wire.server import ServerLoop, abort
from actorhub.wire.transport import STREAM_TAKEN
from actorhub.wire.worker import add_contained
from actorhub.worker.mailbox import ActorInstance, ActorThread, Mailbox, make_mailbox
from actorhub.worker.reply_stream import Caller, ReplyStream

log = logging.getLogger(__name__)


class WorkerService(worker_pb2_grpc.WorkerServicer):
    """Served on the process's event loop: handlers never block it; actor code runs on the
    actor's threads (worker/mailbox.py)."""

    def __init__(self, endpoint: Endpoint, boot: WorkerBoot | None = None) -> None:
        self._endpoint = endpoint
        self._boot = boot  # None in a driver
        # The process's runtime, bound once (see bind); None until then: no object exists yet.
        self._runtime: Runtime | None = None
        self._actor: ActorInstance | None = None
        self._mailbox: Mailbox | None = None
        self._starting = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def serve_on(self, server: grpc.aio.Server, loop: ServerLoop) -> None:
        self._loop = loop.loop
        worker_pb2_grpc.add_WorkerServicer_to_server(self, server)

    def bind(self, runtime: Runtime) -> None:
        """Serve `runtime` from now on; a process has one runtime, so a second bind is a bug."""
        if self._runtime is not None:
            raise RuntimeError(f"this worker service already serves actor {self._runtime.actor_id!r}")
        self._runtime = runtime

    # -- becoming an actor ----------------------------------------------------------------------
    async def StartActor(
        self, request: worker_pb2.StartActorRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> worker_pb2.StartActorReply:
        spec = request.spec
        boot = self._boot
        if self._starting or self._runtime is not None or boot is None:
            await abort(context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this process hosts no more actors: "
                + (f"it hosts {self._runtime.actor_id}" if self._runtime is not None else
                   "it is a driver" if boot is None else "it is starting one"),
            )
        self._starting = True  # on the loop: no lock needed, no other handler runs in between
        identity = Identity(
            job_id=spec.owner_job_id,
            namespace=spec.job_namespace or spec.namespace,
            node_id=request.node_id or boot.node_id,
            node_address=boot.node_address,
            worker_id=boot.worker_id,
            actor_id=spec.actor_id,
            incarnation=request.incarnation,
        )
        runtime = Runtime(identity, self._endpoint)
        self.bind(runtime)
        # The constructor runs on the actor's thread, which (for a serial actor) then runs
        # every call: this loop keeps serving (the constructor may call actors, or be asked
        # for objects it owns) and holds no thread while it runs.
        thread = ActorThread()
        try:
            actor = await asyncio.wrap_future(thread.run(partial(_construct, runtime, spec)))
        except BaseException as e:
            thread.close()
            return worker_pb2.StartActorReply(ok=False, error=error_to_proto(e, tb=e.__traceback__))
        self._mailbox = make_mailbox(actor, spec.is_async, spec.max_concurrency, thread)
        self._actor = actor
        threading.Thread(target=self._watch_terminate, args=(actor, runtime), daemon=True).start()
        return worker_pb2.StartActorReply(ok=True)

    def _watch_terminate(self, actor: ActorInstance, runtime: Runtime) -> None:
        # __ray_terminate__ ends the actor for good: the hub kills this process without restart.
        actor.terminate_requested.wait()
        try:
            runtime.hub.kill_actor(runtime.actor_id, no_restart=True)
        except (RpcFailedError, ValueError) as e:
            # The hub is gone (the cluster with it) or forgot the actor: nothing is left to end.
            log.warning("__ray_terminate__ of actor %s: %s", runtime.actor_id, e)

    # -- calls ----------------------------------------------------------------------------------
    async def CallStream(
        self, request_iterator: AsyncIterator[worker_pb2.CallBatch], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[worker_pb2.ReplyBatch]:
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        runtime = self._runtime
        mailbox = self._mailbox
        if (
            mailbox is None
            or runtime is None
            or first.actor_id != runtime.actor_id
            or first.incarnation != runtime.incarnation
        ):
            await abort(context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this worker does not host actor {first.actor_id} incarnation {first.incarnation}",
            )
        # Before any call runs: tells the caller that what it sent from here on may have run.
        await context.send_initial_metadata((STREAM_TAKEN,))
        assert self._loop is not None
        stream = ReplyStream(self._loop, Caller.of(first))
        _admit(first, mailbox, stream)
        reader = asyncio.ensure_future(_read_calls(request_iterator, mailbox, stream))
        try:
            async for batch in stream.batches():
                yield batch
        finally:
            reader.cancel()

    async def GetObject(
        self, request: worker_pb2.GetObjectRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> worker_pb2.GetObjectReply:
        runtime = self._runtime
        if runtime is None:
            return worker_pb2.GetObjectReply(missing=True)  # nothing is owned before the runtime
        table = runtime.objects
        object_id = request.object_id
        if not table.has(object_id):
            return worker_pb2.GetObjectReply(missing=True)
        if not table.is_ready(object_id):
            # A long poll: a future on this loop, completed by the table, holds no thread.
            timeout = request.timeout_s if request.timeout_s > 0 else None
            if not await _until_ready(table, object_id, timeout):
                return worker_pb2.GetObjectReply(ready=False, missing=not table.has(object_id))
        return self._object_reply(runtime, request)

    def _object_reply(self, runtime: Runtime, request: worker_pb2.GetObjectRequest) -> worker_pb2.GetObjectReply:
        table = runtime.objects
        object_id = request.object_id
        try:
            data, error, _ = table.read(object_id)
        except KeyError:
            return worker_pb2.GetObjectReply(missing=True)
        if error is not None:
            return worker_pb2.GetObjectReply(ready=True, error=to_error_info(error))
        reply = worker_pb2.GetObjectReply(ready=True)
        contained = table.contained_of(object_id)
        if contained:
            # Lent before the value leaves: the reader may unpickle it after we dropped it.
            add_contained(runtime.borrowing.lend([(0, r) for r in contained], request.reader_address), reply)
        store_id = "" if data else table.store_id_of(object_id)
        if store_id:
            if request.reader_node_id:
                # Mapped from the reader's node's store, pulled there first if it is another one.
                store_id, node_address = split_store_id(store_id)
                reply.store_object_id = store_id
                reply.store_node_address = node_address or runtime.node_address
                return reply
            # A reader with no node of its own (no store to map from): the value travels inline.
            try:
                with capturing_refs():  # the refs inside were lent above
                    data = _serialization.dumps(runtime.value_of(object_id))
            except ObjectLostError as e:  # its copy left the node's store: the reader learns why
                return worker_pb2.GetObjectReply(ready=True, error=system_error_info(str(e), ErrorKind.OBJECT_LOST))
        if data:
            reply.value = data
        return reply

    async def AddBorrowers(
       self, request: worker_pb2.BorrowRequest, context: grpc.aio.ServicerContext[Any, Any]) -> common_pb2.Empty:
        if self._runtime is not None:
            self._runtime.borrowing.add_borrowers(request.borrower, request.object_ids)
        return common_pb2.Empty()

    async def RemoveBorrowers(
       self, request: worker_pb2.BorrowRequest, context: grpc.aio.ServicerContext[Any, Any]) -> common_pb2.Empty:
        if self._runtime is not None:
            self._runtime.borrowing.remove_borrowers(request.borrower, request.object_ids, request.counts)
        return common_pb2.Empty()

    async def ListOwnedObjects(
       self, request: common_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]) -> worker_pb2.OwnedObjects:
        runtime = self._runtime
        if runtime is None:
            return worker_pb2.OwnedObjects(address=self._endpoint.address)
        return worker_pb2.OwnedObjects(
            address=runtime.address,
            objects=[
                worker_pb2.OwnedObject(
                    object_id=o.object_id, size=o.size, where=o.where, local_refs=max(o.local_refs, 0),
                    borrowers=o.borrowers, escaped=o.escaped, contained_in=o.contained_in, store_id=o.store_id,
                )
                for o in runtime.objects.owned_snapshot()
            ],
        )

    async def Ping(
       self, request: common_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]) -> common_pb2.Empty:
        return common_pb2.Empty()

    async def HeldStoreIds(
       self, request: worker_pb2.StoreIds, context: grpc.aio.ServicerContext[Any, Any]) -> worker_pb2.StoreIds:
        if self._runtime is None:
            return worker_pb2.StoreIds()
        return worker_pb2.StoreIds(store_ids=self._runtime.objects.held_store_ids(request.store_ids))

    def close(self) -> None:
        if self._mailbox is not None:
            self._mailbox.close()


@dataclass(frozen=True)
class WorkerBoot:
    worker_id: str
    node_id: str
    node_address: str
    hub_address: str
    session_dir: Path
    bind_host: str


def run_worker(boot: WorkerBoot) -> NoReturn:
    """Entry of a forked worker: serve until the node agent kills this process."""
    from actorhub.cluster.session import Session
    from actorhub.config import Config
    from actorhub.wire.tls import load_tls

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    token = Session(boot.session_dir).token
    config = Config.load()
    endpoint = Endpoint(
        token=token, hub_address=boot.hub_address, bind_host=boot.bind_host, deadlines=config.deadlines,
        max_message_bytes=config.max_message_bytes, hub_reconnect_s=config.hub_reconnect_timeout_s,
        tls=load_tls(config, check=False),  # checked by the node agent, whose environment this is
    )
    service = WorkerService(endpoint, boot)
    endpoint.serve(service, service.close)
    from actorhub.runtime import tracing as _tracing

    try:
        _tracing.run_startup_hook(config.tracing_startup_hook)
    except Exception as e:  # tracing is optional: a broken hook is reported, the worker still serves
        print(f"worker {boot.worker_id}: the tracing startup hook failed: {e!r}", file=sys.stderr)
    node = NodeClient(endpoint.channels, boot.node_address, endpoint.deadlines)
    try:
        node.register_worker(boot.worker_id, endpoint.address, os.getpid(), timeout=30)
    except RpcFailedError as e:
        print(f"worker {boot.worker_id}: cannot register with node {boot.node_address}: {e}", file=sys.stderr)
        os._exit(1)
    forever = threading.Event()
    forever.wait()
    os._exit(0)




def _construct(runtime: Runtime, spec: common_pb2.ActorSpec) -> ActorInstance:
    """On the actor's thread: unpickle the class and run its constructor."""
    # Before the constructor runs: it may call actors, and unpickles handles and refs.
    set_current(runtime)
    cls = _serialization.loads(spec.pickled_class)
    actor = ActorInstance(None, spec.class_name, runtime)
    actor.construct(cls, spec.init_args)
    return actor


def _admit(batch: worker_pb2.CallBatch, mailbox: Mailbox, stream: ReplyStream) -> None:
    calls = batch.calls
    if calls:
        stream.admitted(len(calls))
        mailbox.submit(calls, stream)
    if batch.sync_seq:
        # The calls before it are queued in the mailbox: a call sent by whoever gets this
        # acknowledgement can only arrive, so run, after them.
        stream.accept(batch.sync_seq)


async def _read_calls(
    request_iterator: AsyncIterator[worker_pb2.CallBatch], mailbox: Mailbox, stream: ReplyStream
) -> None:
    try:
        async for batch in request_iterator:
            _admit(batch, mailbox, stream)
    except (grpc.RpcError, asyncio.CancelledError):
        pass  # the caller went away; calls already queued still run
    finally:
        stream.end_of_calls()


async def _until_ready(table: ObjectTable, object_id: str, timeout: float | None) -> bool:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_ready() -> None:
        loop.call_soon_threadsafe(_resolve, ready)

    table.add_callback(object_id, on_ready)
    try:
        await asyncio.wait_for(asyncio.shield(ready), timeout)
    except TimeoutError:
        return False
    return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
