"""The Worker service, served by every worker process and every driver.

A worker is forked idle by its node's zygote, registers with the node agent, and becomes an
actor when the node sends StartActor: only then is its identity known, so that is when its
Runtime is built (on the endpoint it served StartActor from) and bound to this service, once.
A driver serves the same service so other processes can read the objects it owns (it never
hosts an actor); init() binds its runtime once the job is registered.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc

from actorhub._proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from actorhub.exceptions import RpcFailedError
from actorhub.runtime import serialization as _serialization
from actorhub.runtime.endpoint import Endpoint
from actorhub.runtime.identity import Identity
from actorhub.runtime.ids import split_store_id
from actorhub.runtime.object_ref import capturing_refs
from actorhub.runtime.runtime import Runtime, set_current
from actorhub.wire.errors import error_to_proto, to_error_info
from actorhub.wire.node import NodeClient
from actorhub.wire.transport import STREAM_TAKEN
from actorhub.wire.worker import add_contained
from actorhub.worker.mailbox import ActorInstance, Mailbox, make_mailbox

log = logging.getLogger(__name__)


class WorkerService(worker_pb2_grpc.WorkerServicer):
    def __init__(self, endpoint: Endpoint, boot: WorkerBoot | None = None) -> None:
        self._endpoint = endpoint
        self._boot = boot  # None in a driver
        # The process's runtime, bound once (see bind); None until then: no object exists yet.
        self._runtime: Runtime | None = None
        self._actor: ActorInstance | None = None
        self._mailbox: Mailbox | None = None
        self._start_lock = threading.Lock()

    def serve_on(self, server: grpc.Server) -> None:
        worker_pb2_grpc.add_WorkerServicer_to_server(self, server)

    def bind(self, runtime: Runtime) -> None:
        """Serve `runtime` from now on; a process has one runtime, so a second bind is a bug."""
        if self._runtime is not None:
            raise RuntimeError(f"this worker service already serves actor {self._runtime.actor_id!r}")
        self._runtime = runtime

    # -- becoming an actor ----------------------------------------------------------------------
    def StartActor(
        self, request: worker_pb2.StartActorRequest, context: grpc.ServicerContext
    ) -> worker_pb2.StartActorReply:
        spec = request.spec
        with self._start_lock:
            boot = self._boot
            if self._runtime is not None or boot is None:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "this process hosts no more actors: "
                    + (f"it hosts {self._runtime.actor_id}" if self._runtime is not None else "it is a driver"),
                )
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
            # Before the constructor runs: it may call actors, and unpickles handles and refs.
            set_current(runtime)
            try:
                cls = _serialization.loads(spec.pickled_class)
                actor = ActorInstance(None, spec.class_name, runtime)
                actor.construct(cls, spec.init_args)
            except BaseException as e:
                tb = e.__traceback__
                return worker_pb2.StartActorReply(ok=False, error=error_to_proto(e, tb=tb))
            self._mailbox = make_mailbox(actor, spec.is_async, spec.max_concurrency)
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
    def CallStream(
        self, request_iterator: Iterator[worker_pb2.CallBatch], context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.ReplyBatch]:
        first = next(request_iterator, None)
        if first is None:
            return
        runtime = self._runtime
        mailbox = self._mailbox
        if (
            mailbox is None
            or runtime is None
            or first.actor_id != runtime.actor_id
            or first.incarnation != runtime.incarnation
        ):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this worker does not host actor {first.actor_id} incarnation {first.incarnation}",
            )
        # Before any call runs: tells the caller that what it sent from here on may have run.
        context.send_initial_metadata((STREAM_TAKEN,))
        yield from mailbox.serve(first, request_iterator)

    def GetObject(
        self, request: worker_pb2.GetObjectRequest, context: grpc.ServicerContext
    ) -> worker_pb2.GetObjectReply:
        runtime = self._runtime
        if runtime is None:
            return worker_pb2.GetObjectReply(missing=True)  # nothing is owned before the runtime
        table = runtime.objects
        object_id = request.object_id
        if not table.has(object_id):
            return worker_pb2.GetObjectReply(missing=True)
        timeout = request.timeout_s if request.timeout_s > 0 else None
        if not table.wait([object_id], 1, timeout)[0]:
            return worker_pb2.GetObjectReply(ready=False, missing=not table.has(object_id))
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
            with capturing_refs():  # the refs inside were lent above
                data = _serialization.dumps(runtime.value_of(object_id))
        if data:
            reply.value = data
        return reply

    def AddBorrowers(self, request: worker_pb2.BorrowRequest, context: grpc.ServicerContext) -> common_pb2.Empty:
        if self._runtime is not None:
            self._runtime.borrowing.add_borrowers(request.borrower, request.object_ids)
        return common_pb2.Empty()

    def RemoveBorrowers(self, request: worker_pb2.BorrowRequest, context: grpc.ServicerContext) -> common_pb2.Empty:
        if self._runtime is not None:
            self._runtime.borrowing.remove_borrowers(request.borrower, request.object_ids, request.counts)
        return common_pb2.Empty()

    def ListOwnedObjects(self, request: common_pb2.Empty, context: grpc.ServicerContext) -> worker_pb2.OwnedObjects:
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

    def Ping(self, request: common_pb2.Empty, context: grpc.ServicerContext) -> common_pb2.Empty:
        return common_pb2.Empty()

    def HeldStoreIds(self, request: worker_pb2.StoreIds, context: grpc.ServicerContext) -> worker_pb2.StoreIds:
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

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    token = Session(boot.session_dir).token
    config = Config.load()
    endpoint = Endpoint(
        token=token, hub_address=boot.hub_address, bind_host=boot.bind_host, deadlines=config.deadlines,
        server_threads=256,
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


