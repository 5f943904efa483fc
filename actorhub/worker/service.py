"""The Worker service, served by every worker process and every driver.

A worker is forked idle by its node's zygote, registers with the node agent, and becomes an
actor when the node sends StartActor: only then is its identity known, so that is when its
Runtime is built (on the endpoint it served StartActor from) and bound to this service, once.
A driver serves the same service so other processes can read the objects it owns (it never
hosts an actor); init() binds its runtime once the job is registered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import grpc

from actorhub._proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from actorhub.exceptions import ObjectLostError, RpcFailedError
from actorhub.metrics.counts import CALLS
from actorhub.runtime import log_markers, placement_scope
from actorhub.runtime import serialization as _serialization
from actorhub.runtime import tracing as _tracing
from actorhub.runtime.endpoint import Endpoint
from actorhub.runtime.identity import Identity
from actorhub.runtime.ids import split_store_id
from actorhub.runtime.object_ref import capturing_refs
from actorhub.runtime.object_table import ObjectTable
from actorhub.runtime.runtime import Runtime, set_current
from actorhub.runtime_env.worker_setup import apply_in_worker
from actorhub.wire.errors import ErrorKind, error_to_proto, system_error_info, to_error_info
from actorhub.wire.node import NodeClient
from actorhub.wire.server import ServerLoop, abort
from actorhub.wire.transport import STREAM_MOVED, STREAM_TAKEN
from actorhub.wire.worker import add_contained
from actorhub.worker import actor_exit, checkpoints, current_call, drain
from actorhub.worker.clean_exit import run_exit_hooks
from actorhub.worker.groups import make_actor_mailbox
from actorhub.worker.mailbox import ActorInstance, ActorThread, Mailbox
from actorhub.worker.proc_title import set_title
from actorhub.worker.reply_stream import Caller, ReplyStream

log = logging.getLogger(__name__)
# A graceful end waits this long for the calls under way and then the cleanup hooks (Ray's
# default graceful shutdown timeout), then the hub ends the process anyway.
_GRACEFUL_EXIT_S = 30.0
# And this long for the replies of the calls that ran to leave.
_REPLIES_SENT_S = 2.0


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
        # The callers' reply streams now open; on the loop only.
        self._streams: set[ReplyStream] = set()
        # A drain ended the calls here (worker/drain.py): streams opened from now on end at once.
        self._drained = False

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
            gpu_ids=tuple(request.gpu_ids),
            assigned=_assigned(spec),
        )
        if spec.placement_group_id:
            placement_scope.enter_actor(spec.placement_group_id, spec.placement_group_bundle_index,
                                        spec.placement_group_capture_child_tasks)
        if request.gpu_ids:
            # Before the constructor: a framework it imports reads this once, at its import.
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in request.gpu_ids)
        runtime = Runtime(identity, self._endpoint)
        self.bind(runtime)
        # What it prints from its constructor on belongs to its job (runtime/log_markers.py).
        log_markers.mark_actor(spec.owner_job_id, spec.actor_id, spec.class_name, spec.name)
        set_title(spec.class_name)
        # The constructor runs on the actor's thread, which (for a serial actor) then runs
        # every call: this loop keeps serving (the constructor may call actors, or be asked
        # for objects it owns) and holds no thread while it runs.
        thread = ActorThread()
        try:
            actor = await asyncio.wrap_future(thread.run(partial(_construct, runtime, spec, boot.session_dir)))
        except BaseException as e:
            thread.close()
            return worker_pb2.StartActorReply(ok=False, error=_construct_error(e, spec))
        self._mailbox = make_actor_mailbox(actor, spec, thread)
        self._actor = actor
        from actorhub.metrics import worker_metrics  # preloaded by the zygote; drivers never import it

        worker_metrics.start(spec.class_name, spec.actor_id, identity.node_id)
        threading.Thread(target=self._watch_terminate, args=(actor, runtime, self._mailbox), daemon=True).start()
        return worker_pb2.StartActorReply(ok=True)

    def _watch_terminate(self, actor: ActorInstance, runtime: Runtime, mailbox: Mailbox) -> None:
        """A graceful end (__ray_terminate__, or no handle left: runtime/actor_refs.py): the calls
        under way finish, those not started never run, the actor's cleanup hooks run
        (__ray_shutdown__, atexit), the replies go out, and the hub ends it without restart."""
        actor.terminate_requested.wait()
        mailbox.finish(partial(run_exit_hooks, actor.instance), _GRACEFUL_EXIT_S)
        if self._loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._replies_sent(), self._loop).result(_REPLIES_SENT_S + 1)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass  # the loop is stopping, or a caller is slow to read: the process ends anyway
        try:
            runtime.hub.kill_actor(runtime.actor_id, no_restart=True, exit_reason=actor.exit_reason)
        except (RpcFailedError, ValueError) as e:
            # The hub is gone (the cluster with it) or forgot the actor: nothing is left to end.
            log.warning("the graceful end of actor %s: %s", runtime.actor_id, e)
            # Its calls are no longer run: a process left serving would leave its callers waiting.
            sys.stderr.flush()
            os._exit(0)

    async def _replies_sent(self) -> None:
        """Until every reply posted so far has left for its caller (or _REPLIES_SENT_S passed)."""
        deadline = time.monotonic() + _REPLIES_SENT_S
        while any(stream.unsent for stream in self._streams) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

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
        self._streams.add(stream)
        if self._drained:
            stream.end_moved()
        else:
            _admit(first, mailbox, stream)
        reader = asyncio.ensure_future(_read_calls(request_iterator, mailbox, stream))
        try:
            async for batch in stream.batches():
                yield batch
            if stream.moved:
                context.set_trailing_metadata((STREAM_MOVED,))
        finally:
            reader.cancel()
            self._streams.discard(stream)

    async def DrainActor(
        self, request: worker_pb2.DrainActorRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> worker_pb2.DrainActorReply:
        """The node is drained (worker/drain.py): once the calls under way ended and their replies
        left, every stream ends as moved. The hub then ends this process."""
        actor, mailbox, runtime = self._actor, self._mailbox, self._runtime
        if (actor is None or mailbox is None or runtime is None or request.actor_id != runtime.actor_id
                or request.incarnation != runtime.incarnation):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"this worker does not host actor {request.actor_id} incarnation {request.incarnation}")
        ended = await asyncio.get_running_loop().run_in_executor(
            None, drain.stop_calls, actor, mailbox, request.move, request.reason, request.timeout_s)
        if ended:
            await self._replies_sent()
            self._drained = True
            for stream in list(self._streams):
                stream.end_moved()
        return worker_pb2.DrainActorReply(calls_ended=ended)

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

    async def CancelCall(
        self, request: worker_pb2.CancelCallRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> worker_pb2.CancelCallReply:
        runtime = self._runtime
        if runtime is None:
            return worker_pb2.CancelCallReply()  # owns nothing yet: nothing to cancel
        # The API's cancel (imported on use: it builds on this kernel); off the loop, since a
        # task's cancel may call its executor.
        from actorhub.api.cancel import cancel_owned

        try:
            await asyncio.get_running_loop().run_in_executor(
                None, cancel_owned, runtime, request.object_id, request.force, request.recursive
            )
        except ValueError as e:
            return worker_pb2.CancelCallReply(refused=str(e))
        return worker_pb2.CancelCallReply()

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
    set_title("")
    log_markers.mark_worker(boot.node_id, os.getpid())
    token = Session(boot.session_dir).token
    config = Config.load()
    endpoint = Endpoint(
        token=token, hub_address=boot.hub_address, bind_host=boot.bind_host, deadlines=config.deadlines,
        max_message_bytes=config.max_message_bytes, hub_reconnect_s=config.hub_reconnect_timeout_s,
        tls=load_tls(config, check=False),  # checked by the node agent, whose environment this is
        pin_io_threads=config.pin_io_threads,
    )
    service = WorkerService(endpoint, boot)
    endpoint.serve(service, service.close)
    try:
        _tracing.export_to(config.otlp_endpoint, "actorhub-worker")
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




def _assigned(spec: common_pb2.ActorSpec) -> tuple[tuple[str, float], ...]:
    held = dict(spec.resources)
    if spec.num_cpus > 0:
        held["CPU"] = spec.num_cpus
    return tuple(sorted(held.items()))


def _construct(runtime: Runtime, spec: common_pb2.ActorSpec, session_dir: Path) -> ActorInstance:
    """On the actor's thread: apply its runtime_env, unpickle the class and run its constructor."""
    # Before the constructor runs: it may call actors, and unpickles handles and refs.
    set_current(runtime)
    # Before the class is unpickled: it may come from a module of its working_dir or py_modules.
    apply_in_worker(runtime, spec.runtime_env, session_dir)
    cls = _serialization.loads(spec.pickled_class)
    actor = ActorInstance(None, spec.class_name, runtime)
    if any(m.typed for m in spec.methods):  # @remote(typed=True): returns are checked here
        from actorhub.api import typed

        # From the hints the creator resolved: in a module shipped by value, as a test's or
        # a notebook's, the names a string annotation refers to are not here to resolve again.
        checks = {m.name: typed.unpack(f"{spec.class_name}.{m.name}", m.typed) for m in spec.methods if m.typed}
        actor.return_checks = {name: check for name, check in checks.items() if check is not None}
    current_call.set_actor(spec.class_name)
    try:
        if spec.trace_context:
            with _tracing.start_span(spec.class_name, runtime.identity.incarnation, spec.trace_context):
                actor.construct(cls, spec.init_args)
        else:
            actor.construct(cls, spec.init_args)
    except BaseException as e:
        if actor_exit.intentional_reason(e, "") is not None:
            run_exit_hooks(None)  # before the node ends this process; no instance: no __ray_shutdown__
        raise
    if checkpoints.is_checkpointed(cls):
        _set_up_checkpoints(runtime, spec, actor)
    log_markers.mark_actor_repr(actor.instance)
    return actor


def _set_up_checkpoints(runtime: Runtime, spec: common_pb2.ActorSpec, actor: ActorInstance) -> None:
    """After the constructor, before the first call: a restarted actor gets its newest checkpoint."""
    from actorhub.config import Config

    directory = Config.load().checkpoint_dir
    store = checkpoints.DirectoryCheckpoints(directory) if directory else checkpoints.HubCheckpoints(runtime.hub)
    incarnation = runtime.identity.incarnation
    checkpointer = checkpoints.Checkpointer(
        actor.instance, spec.actor_id, incarnation, store, spec.checkpoint_every_calls, spec.checkpoint_every_s)
    if incarnation > 0:
        checkpointer.restore()
    actor.checkpointer = checkpointer
    checkpoints.install(checkpointer)


def _construct_error(e: BaseException, spec: common_pb2.ActorSpec) -> common_pb2.ErrorInfo:
    """Why the actor could not start, for the hub. exit_actor() (or sys.exit(0)) in the
    constructor is an intentional exit, as in Ray: the actor is dead, not restarted, its callers
    learn it exited (its atexit handlers ran in `_construct`)."""
    reason = actor_exit.intentional_reason(e, f"{spec.class_name}.__init__")
    if reason is None:
        return error_to_proto(e, tb=e.__traceback__)
    return system_error_info(reason, ErrorKind.ACTOR_DIED)


def _admit(batch: worker_pb2.CallBatch, mailbox: Mailbox, stream: ReplyStream) -> None:
    calls = batch.calls
    if calls:
        CALLS.received += len(calls)  # published with the worker's metrics (metrics/worker_metrics.py)
        stream.admitted(len(calls))
        stream.track([call.seq for call in calls])
        mailbox.submit(calls, stream)
    if batch.cancel_seqs:
        _cancel(batch.cancel_seqs, mailbox, stream)
    if batch.sync_seq:
        # The calls before it are queued in the mailbox: a call sent by whoever gets this
        # acknowledgement can only arrive, so run, after them.
        stream.accept(batch.sync_seq)


def _cancel(seqs: Sequence[int], mailbox: Mailbox, stream: ReplyStream) -> None:
    """The caller cancelled these calls: each not replied to yet is answered TaskCancelledError
    now; one still queued then never runs, a running coroutine is cancelled, and a running
    thread finishes (Ray does not interrupt an actor's thread: its state could break)."""
    answered = []
    for seq in seqs:
        error = system_error_info(f"the actor call {seq} was cancelled", ErrorKind.TASK_CANCELLED)
        if stream.cancel(seq, worker_pb2.Reply(seq=seq, error=error)):
            answered.append(seq)
    if answered:
        mailbox.interrupt(stream, answered)


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
