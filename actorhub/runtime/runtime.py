"""The per-process runtime: what a driver or a worker needs to call actors and hold objects.

One Runtime per process, built once its identity is known: by `init()` in a driver, at
StartActor in a worker. Its identity never changes, and its services (the endpoint: server,
channels, hub) are passed in. It is passed explicitly inside the kernel; `current()` finds
the process's runtime and never starts one (only the public API may start a cluster).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import Any, cast

from actorhub.exceptions import (
    GetTimeoutError,
    NoRuntimeError,
    ObjectLostError,
    OwnerDiedError,
    RpcFailedError,
)
from actorhub.runtime import current as _current
from actorhub.runtime import serialization as _serialization
from actorhub.runtime import task_context
from actorhub.runtime.actor_refs import OUT_OF_SCOPE_METHOD, OUT_OF_SCOPE_REASON, OwnedActors, actor_id_of
from actorhub.runtime.borrowing import Borrowing
from actorhub.runtime.endpoint import Endpoint
from actorhub.runtime.identity import Identity
from actorhub.runtime.ids import job_tag, new_id, split_store_id, stored_elsewhere
from actorhub.runtime.object_ref import ObjectRef, capturing_refs
from actorhub.runtime.object_table import ObjectTable
from actorhub.wire.call_stream import ActorConnection, call_mark
from actorhub.wire.errors import ErrorKind, system_error, to_exception
from actorhub.wire.hub import JobLease
from actorhub.wire.rpc import check_message_size
from actorhub.wire.worker import WorkerClient

_OBJECT_LOST = ErrorKind.OBJECT_LOST
# The most a reply waits for its method's calls to reach their streams (a connect, at worst).
_SEND_BEFORE_REPLY_S = 2.0

# Set once by a task executor for its process (tasks/executor.py): called around a get() that
# must wait, so the executor's CPU can run other tasks meanwhile (a task waiting on its subtasks
# must not starve them). Process-wide, not per thread or context: an executor runs one task at
# a time, and a thread that task starts waits on the same CPU. Not a runtime field: the runtime
# stays as it was built.
BlockingHooks = tuple[Callable[[], None], Callable[[], None]]
_blocking_hooks: BlockingHooks | None = None


def set_blocking_hooks(hooks: BlockingHooks | None) -> None:
    global _blocking_hooks
    _blocking_hooks = hooks


class Runtime:
    def __init__(self, identity: Identity, endpoint: Endpoint) -> None:
        self._identity = identity
        self._endpoint = endpoint
        # Unique to this runtime, and tagged with its job (see ids.job_tag): the prefix of the
        # ids of every call, task and put made here for that job.
        self._caller_nonce = new_id(8)
        self.caller_id = job_tag(identity.job_id) + self._caller_nonce
        self.hub_address = endpoint.hub_address
        self.token = endpoint.token
        self.objects = ObjectTable()
        self.channels = endpoint.channels
        self.streams = endpoint.streams
        self.deadlines = endpoint.deadlines
        self.hub = endpoint.hub
        self._connections: dict[str, ActorConnection] = {}
        # Connections that may hold calls not yet handed to their stream (see send_submitted_calls).
        self._unsent_on: set[ActorConnection] = set()
        self._lock = threading.Lock()
        self._puts = itertools.count(1)
        self._fetcher = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="actorhub-fetch")
        self.address = endpoint.address
        self.borrowing = Borrowing(self.objects, self.channels, self.address, self.deadlines)
        self.owned_actors = OwnedActors(self.objects, self.address, self._end_actor)
        self.borrowing.watch_actor_refs(self.owned_actors.end_unreferenced, self._settle_calls_to)
        self.closed = False
        self._close_hooks: list[Callable[[], None]] = []
        self._store_client: Any = None
        self._job_lease: JobLease | None = None
        # Set by the task submitter when lineage reconstruction is on (tasks/lineage.py): get()
        # reads each object through it, so one lost with its node is made again. None: ObjectLostError.
        self.rebuild_lost: Callable[[str, float | None], Any] | None = None

    # -- identity: read-only, fixed at construction ------------------------------------------------
    @property
    def identity(self) -> Identity:
        return self._identity

    @property
    def job_id(self) -> str:
        return self._identity.job_id

    @property
    def namespace(self) -> str:
        return self._identity.namespace

    @property
    def node_id(self) -> str:
        return self._identity.node_id

    @property
    def node_address(self) -> str:
        return self._identity.node_address

    @property
    def worker_id(self) -> str:
        return self._identity.worker_id

    @property
    def actor_id(self) -> str:
        return self._identity.actor_id

    @property
    def incarnation(self) -> int:
        return self._identity.incarnation

    def store_client(self) -> Any:
        """The client of this node's object store, made on first use; None with no local node."""
        if self._store_client is None and self.node_address:
            with self._lock:
                if self._store_client is None:
                    from actorhub.object_store.client import StoreClient

                    self._store_client = StoreClient(self, self.node_address)
                    self._close_hooks.append(self._store_client.close)
        return self._store_client

    def add_close_hook(self, hook: Callable[[], None]) -> None:
        self._close_hooks.append(hook)

    # -- actor connections ----------------------------------------------------------------------
    def connection(
        self, actor_id: str, class_name: str, max_task_retries: int, max_pending_calls: int
    ) -> ActorConnection:
        conn = self._connections.get(actor_id)
        if conn is None:
            with self._lock:
                conn = self._connections.get(actor_id)
                if conn is None:
                    conn = ActorConnection(self, actor_id, class_name, max_task_retries, max_pending_calls)
                    self._connections[actor_id] = conn
        return conn

    def note_unsent(self, conn: ActorConnection) -> None:
        self._unsent_on.add(conn)

    def forget_connection(self, conn: ActorConnection) -> None:
        """Called by a connection that learnt its actor is dead and holds no call: a later call
        makes a new connection, which the hub tells the same. Off the call path."""
        with self._lock:
            if self._connections.get(conn.actor_id) is conn:
                del self._connections[conn.actor_id]
        self._unsent_on.discard(conn)
        # A worker hosts one actor in its life: its channels (~10 KiB each) would only pile up.
        for address in conn.addresses:
            self.channels.discard(address)
            self.streams.discard(address)

    def cancel_call(self, object_id: str) -> bool:
        """cancel() of an actor call this process made and that has not settled: True when
        `object_id` is such a call's result (whatever came of the cancel), else False."""
        origin = self.objects.pending_origin(object_id)
        if origin is None or not origin.actor_id:
            return False
        conn = self._connections.get(origin.actor_id)
        return conn is not None and conn.cancel(object_id)

    def actor_call_mark(self) -> int:
        """Below every actor call this process makes from now on: see cancel_calls_after."""
        return call_mark()

    def cancel_calls_after(self, mark: int, spared_classes: Container[str]) -> None:
        """cancel() of every actor call this process made after `mark` (`call_mark()`) and not
        settled yet, but those to actors of `spared_classes`: a recursive cancel's actor calls."""
        for conn in list(self._connections.values()):
            if conn.class_name not in spared_classes:
                conn.cancel_after(mark)

    def _end_actor(self, actor_id: str, class_name: str) -> None:
        """Nothing references this actor we created: it ends after the calls queued here (on
        the same connection, so behind them), running its cleanup hooks (worker/clean_exit.py)."""
        conn = self._connections.get(actor_id)
        if conn is None or (not conn.addresses and conn.settled()):
            # Never called from here: one still waiting to be placed (infeasible, say) would
            # keep the call waiting with it, so the hub drops it; it ran no constructor to clean
            # up. Calls queued for it (a handle dropped right after its call) keep it: they run
            # first, as in Ray, where a submitted call holds its actor.
            info = self.hub.actor_info(actor_id)
            if info.state == "PENDING":
                self.hub.kill_actor(actor_id, no_restart=True, exit_reason=OUT_OF_SCOPE_REASON)
                return
        self.connection(actor_id, class_name, 0, -1).submit(OUT_OF_SCOPE_METHOD, b"", 0, 0)

    def _settle_calls_to(self, actor_ref_ids: list[str]) -> None:
        """Before this process gives back its last handle to these actors: the calls it made
        through them are taken in, so the owner's end of an actor cannot overtake them."""
        deadline = time.monotonic() + _SEND_BEFORE_REPLY_S
        for object_id in actor_ref_ids:
            conn = self._connections.get(actor_id_of(object_id))
            if conn is not None:
                conn.wait_accepted(deadline)

    def connection_count(self) -> int:
        return len(self._connections)

    def has_unsent_calls(self) -> bool:
        return bool(self._unsent_on)

    def send_submitted_calls(self) -> None:
        """Before a method's reply goes: wait (briefly) until the calls it made are taken in.

        So a result's receiver that calls the same actors next finds those calls queued ahead of
        its own, as a program reading "the task called the tracker, then returned" expects.
        """
        if not self._unsent_on:
            return
        deadline = time.monotonic() + _SEND_BEFORE_REPLY_S
        for conn in list(self._unsent_on):
            conn.wait_accepted(deadline)
            # Discard, then check: a submit racing with this notes the connection again.
            self._unsent_on.discard(conn)
            if not conn.settled():
                self._unsent_on.add(conn)

    # -- objects --------------------------------------------------------------------------------
    def id_prefix(self) -> str:
        """The prefix of the ids of tasks and puts made now: tagged with the job of the code
        making them, which in a task executor is the running task's, not the executor's."""
        job = task_context.job_id_of(self)
        return self.caller_id if job == self.job_id else job_tag(job) + self._caller_nonce

    def refs_for(self, object_ids: Sequence[str]) -> list[ObjectRef[Any]]:
        return [ObjectRef(i, self.address, self.objects) for i in object_ids]

    def put(self, value: Any) -> ObjectRef[Any]:
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself instead")
        object_id = f"{self.id_prefix()}.p{next(self._puts):x}"
        if type(value) in _serialization.PLAIN_TYPES and not _serialization.is_large(value):
            self.objects.put_ready(object_id, _serialization.dumps(value))
            return ObjectRef(object_id, self.address, self.objects)
        store = self.store_client()
        with capturing_refs() as contained:
            if store is None:
                self.objects.put_ready(object_id, _serialization.dumps(value))
            else:
                small = store.put(object_id, value)
                if isinstance(small, int):
                    self.objects.put_stored(object_id, small)
                else:
                    # Small: kept inline. Out-of-band buffers (a small array) must go in-band then.
                    data = small.inband if not small.buffers else _serialization.dumps(value)
                    self.objects.put_ready(object_id, data)
        if contained:
            # The refs inside live as long as this object: whoever reads it may unpickle them.
            self.objects.attach_contained(object_id, contained)
        return ObjectRef(object_id, self.address, self.objects)

    def store_result(self, value: Any, owner: str, owner_node_id: str) -> tuple[str, int]:
        """Put a call's large result in this node's store for its caller, `owner`.

        Returns what the caller records: the store id, with this node's address when the
        caller is on another node (see _ids.stored_elsewhere), and its bytes there; "" when it
        should travel inline (no store here, or smaller than the store takes).
        """
        store = self.store_client()
        if store is None:
            return "", 0
        store_id = f"{self.caller_id}.r{next(self._puts):x}"
        size = store.put(store_id, value, owner=owner)
        if not isinstance(size, int):
            return "", 0
        return store_id if owner_node_id == self.node_id else stored_elsewhere(store_id, self.node_address), size

    def discard_stored(self, store_ids: list[str]) -> None:
        self.objects.discard_stored(store_ids)

    @property
    def max_message_bytes(self) -> int:
        return self.channels.max_message_bytes

    def call_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str, stage: bool
    ) -> tuple[bytes, list[ObjectRef[Any]]]:
        """A call's serialized (args, kwargs), and the refs inside them.

        The caller keeps those refs alive until the call is settled (`hold_until_settled`): the
        callee tells their owners before it replies if it keeps any. With `stage`, large
        top-level arguments go through the object store (see stage_large_arguments).
        """
        if not kwargs and (not args or all(type(a) in _serialization.PLAIN_TYPES for a in args)):
            data = _serialization.dumps_args(args, kwargs, where)
            if len(data) < _serialization.LARGE_ARGUMENT_BYTES or not stage:
                check_message_size(f"the arguments of {where}", len(data), self.channels.max_message_bytes)
                return data, []
        if stage and _serialization.has_large_arguments(args, kwargs):
            args, kwargs = self.stage_large_arguments(args, kwargs)
        with capturing_refs() as refs:
            data = _serialization.dumps_args(args, kwargs, where)
        check_message_size(f"the arguments of {where}", len(data), self.channels.max_message_bytes)
        return data, refs

    def stage_large_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Put large top-level arguments in the object store and pass refs instead.

        The callee resolves top-level refs before it runs, so it sees the value, mapped
        without a copy; the refs live as long as the call, like any ref argument.
        """

        def stage(value: Any) -> Any:
            return self.put(value) if _serialization.is_large(value) else value

        return tuple(stage(a) for a in args), {k: stage(v) for k, v in kwargs.items()}

    def hold_until_constructed(self, actor_id: str, class_name: str, max_task_retries: int,
                               refs: list[ObjectRef[Any]]) -> None:
        """Keep `refs`, found in a new actor's constructor arguments, alive until its constructor
        ran: by then the actor told their owners which ones it keeps. Its answer to one
        `__ray_ready__` call (sent once it is alive, or failed once it is dead) says when."""
        conn = self.connection(actor_id, class_name, max_task_retries, -1)
        ids = conn.submit("__ray_ready__", b"", 1, 0)
        ready = self.refs_for(ids)  # kept by the callback, so the entry goes once it ran

        def release() -> None:
            refs.clear()
            ready.clear()

        self.objects.add_callback(ids[0], release)

    def hold_until_settled(self, object_ids: Sequence[str], refs: list[ObjectRef[Any]]) -> None:
        """Keep `refs` alive until the last of `object_ids` (a call's results) is settled.

        With no results to wait for, nothing says when the callee is done with them: they are
        kept while this process lives.
        """
        if not object_ids:
            for ref in refs:
                self.objects.mark_escaped(ref.hex())
            return
        self.objects.add_callback(object_ids[-1], refs.clear)

    def adopt_ref(self, object_id: str, owner_address: str) -> ObjectRef[Any]:
        """The ref for an id that arrived inside a message."""
        return self.borrowing.adopt(object_id, owner_address)

    def start_fetch(self, ref: ObjectRef[Any]) -> None:
        """Make sure `ref` becomes ready here: raises if owned here but gone, fetches if borrowed."""
        self._check_known([ref])

    def _check_known(self, refs: Sequence[ObjectRef[Any]]) -> None:
        lost, fetch = self.objects.check_known([(r.hex(), r.owner_address) for r in refs], self.address)
        for object_id, owner in fetch:
            self._fetcher.submit(self._fetch, object_id, owner)
        if lost:
            raise ObjectLostError(f"object {lost[0]} was freed or never existed", object_id=lost[0])

    def _fetch(self, object_id: str, owner: str) -> None:
        if not owner:
            # A ref made from an id alone (ObjectRef.from_hex, nil) that this process does not own.
            self.objects.fail_fetch(object_id, system_error(
                f"object {object_id!r} is not owned by this process and its ref names no owner to fetch it from",
                _OBJECT_LOST))
            return
        client = WorkerClient(self.channels, owner, self.deadlines, role="owner")
        try:
            while True:
                reply = client.get_object(object_id, 5.0, self.node_id, self.address)
                if reply.ready or reply.missing:
                    break
        except RpcFailedError as e:
            code = e.code.name if e.code is not None else "UNKNOWN"
            self.objects.fail_fetch(
                object_id, system_error(f"the owner of object {object_id} ({owner}) died: {code}", _OBJECT_LOST)
            )
            return
        if reply.contained:
            self.borrowing.accept_lent([object_id], reply.contained)
        if reply.missing:
            self.objects.fail_fetch(
                object_id, system_error(f"object {object_id} is not held by its owner {owner}", _OBJECT_LOST)
            )
        elif reply.error is not None:
            self.objects.complete_many([(object_id, None, reply.error)])
        elif reply.store_object_id:
            store_id = reply.store_object_id
            source = reply.store_node_address
            if source and source != self.node_address:
                try:
                    self.store_client().pull(store_id, source, owner)
                except ObjectLostError as e:
                    self.objects.fail_fetch(object_id, system_error(str(e), _OBJECT_LOST))
                    return
                # Where the primary is: a copy dropped here under pressure is pulled again.
                store_id = stored_elsewhere(store_id, source)
            self.objects.complete_stored(object_id, store_id)
        else:
            self.objects.complete_many([(object_id, reply.value, None)])

    def get(self, refs: Sequence[ObjectRef[Any]], timeout: float | None) -> list[Any]:
        self._check_known(refs)
        ids = [r.hex() for r in refs]
        hooks = _blocking_hooks
        if hooks is None or all(self.objects.is_ready(i) for i in ids):
            flags = self.objects.wait(ids, len(ids), timeout)
        else:
            hooks[0]()
            try:
                flags = self.objects.wait(ids, len(ids), timeout)
            finally:
                hooks[1]()
        if not all(flags):
            missing = [i for i, ok in zip(ids, flags, strict=True) if not ok]
            raise GetTimeoutError(
                f"get() timed out after {timeout} s; {len(missing)} of {len(ids)} objects not ready "
                f"(first: {missing[0]})"
            )
        rebuild = self.rebuild_lost
        if rebuild is not None:
            return [rebuild(i, timeout) for i in ids]
        return [self.value_of(i) for i in ids]

    def value_of(self, object_id: str) -> Any:
        data, error, origin = self.objects.read(object_id)
        if error is not None:
            if error.kind == _OBJECT_LOST:
                raise OwnerDiedError(error.message, object_id=object_id)
            if origin is None:
                raise to_exception(error)
            raise to_exception(
                error, function_name=origin.function_name, actor_id=origin.actor_id, class_name=origin.class_name
            )
        assert data is not None
        if not data:
            store_id = self.objects.store_id_of(object_id)
            if store_id:
                # In another node's store: an owned result stored there, or a borrowed object
                # whose copy here may have been dropped since it was pulled.
                store_id, node_address = split_store_id(store_id)
                return self.store_client().read(store_id, pull_from=node_address)
        return _serialization.loads(data)

    def get_value(self, ref: ObjectRef[Any]) -> Any:
        return self.get([ref], None)[0]

    def wait(
        self, refs: Sequence[ObjectRef[Any]], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
        ids = [r.hex() for r in refs]
        flags = self.objects.wait(ids, num_returns, 0)
        if flags.count(True) < num_returns and (timeout is None or timeout > 0):
            # Not there yet: what is borrowed must be on its way before waiting for it.
            self._check_known(refs)
            flags = self.objects.wait(ids, num_returns, timeout)
        # At most num_returns are flagged: the table's scan stops there.
        return list(itertools.compress(refs, flags)), list(itertools.compress(refs, [not f for f in flags]))

    def future_of(self, ref: ObjectRef[Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        object_id = ref.hex()
        self._check_known([ref])

        rebuild = self.rebuild_lost

        def settle() -> None:
            try:
                future.set_result(self.value_of(object_id) if rebuild is None else rebuild(object_id, None))
            except BaseException as e:
                future.set_exception(e)

        def settle_elsewhere() -> None:
            # A lost object made again is waited for: never on the thread that completes objects.
            self._fetcher.submit(settle)

        self.objects.add_callback(object_id, settle if rebuild is None else settle_elsewhere)
        return future

    # -- lifecycle --------------------------------------------------------------------------------
    def job_lease(self, timeout: float) -> JobLease:
        """Open the job's lease; returns once the hub has acknowledged it.

        From then on this process's death, however abrupt, ends the job at the hub. A lease
        that breaks while this process lives (a hub restart) is reopened (wire.hub.JobLease);
        close() ends it.
        """
        lease = JobLease(self.hub, self.job_id)
        lease.open(timeout)
        self._job_lease = lease
        return lease

    def close(self) -> None:
        if self._job_lease is not None:
            self._job_lease.cancel()
        for hook in self._close_hooks:
            try:
                hook()
            except Exception:  # closing goes on: the process is leaving anyway
                pass
        self.borrowing.close()
        # From here on, completion callbacks fired by closing connections must not send anything.
        self.closed = True
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for conn in connections:
            conn.close()
        self._endpoint.stop_serving()
        self._fetcher.shutdown(wait=False, cancel_futures=True)
        self.channels.close()


def set_current(runtime: Runtime | None) -> None:
    """Called at the process's edge only: init() and shutdown(), a worker's StartActor."""
    _current.set_runtime(runtime)


def current_or_none() -> Runtime | None:
    # Only set_current() writes the slot, always with a Runtime.
    return cast("Runtime | None", _current.runtime_or_none())


def current() -> Runtime:
    """The process's runtime. Never starts a cluster: that belongs to the public API alone
    (api/cluster.py's connected_runtime), so actorhub's own machinery cannot start one by accident."""
    runtime = current_or_none()
    if runtime is None:
        raise NoRuntimeError("this process has no actorhub runtime: call actorhub.init() first")
    return runtime
