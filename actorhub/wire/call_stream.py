"""The caller's side of an actor: one long-lived gRPC stream per (this process, actor).

Calls from every thread of this process to one actor go into one queue, so they reach the
actor in the order they were submitted. The stream runs on the process's stream loop
(`stream_loop.StreamLoop`, the server's event loop): its writer drains the whole queue into one
CallBatch per write, so calls made faster than the network takes them travel together, and its
reader completes replies as they arrive. The connection's own thread runs the stream's life:
when the stream breaks it asks the hub what became of the actor (restarted or dead) before
deciding the fate of the calls that were in flight.

This module is the I/O half: the thread, the stream, the writer's wake-up and the hub's long
poll. What to do about each event is decided by `call_state.CallState`, under this
connection's condition.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from actorhub._proto.v1 import common_pb2, worker_pb2
from actorhub.exceptions import RpcFailedError
from actorhub.runtime.borrowing import Borrowing
from actorhub.runtime.object_table import Completion, ErrorOrigin, ObjectTable
from actorhub.wire.call_state import (
    HUB_UNREACHABLE_S,
    AskHub,
    CallState,
    Connect,
    HubFailure,
    ItemSink,
    Pause,
    PendingCall,
    Step,
)
from actorhub.wire.errors import RemoteError, from_error_info
from actorhub.wire.hub import HubClient
from actorhub.wire.stream_loop import StreamLoop
from actorhub.wire.transport import STREAM_MOVED, STREAM_TAKEN, ChannelPool
from actorhub.wire.worker import lent_refs

log = logging.getLogger(__name__)

_CALL_STREAM = "/actorhub.v1.Worker/CallStream"

_call_numbers = itertools.count(1)


def call_mark() -> int:
    """A number below every call this process makes from now on (calls are numbered in order
    across all its connections): `ActorConnection.cancel_after` reaches those made after it."""
    return next(_call_numbers)


class ConnectionHost(Protocol):
    """What a connection needs from the process runtime."""

    objects: ObjectTable
    channels: ChannelPool
    streams: StreamLoop
    hub: HubClient
    caller_id: str
    address: str
    borrowing: Borrowing

    @property
    def node_id(self) -> str: ...  # read-only: part of the runtime's fixed identity

    def note_unsent(self, conn: ActorConnection) -> None: ...

    def forget_connection(self, conn: ActorConnection) -> None:
        """`conn`'s actor is dead and it holds no call: a later call may make a new one."""


class _Stream:
    __slots__ = ("closed", "incarnation")

    def __init__(self, incarnation: int) -> None:
        self.closed = False
        self.incarnation = incarnation


class ActorConnection:
    def __init__(
        self,
        host: ConnectionHost,
        actor_id: str,
        class_name: str,
        max_task_retries: int,
        max_pending_calls: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self.actor_id = actor_id
        self.class_name = class_name
        self._cond = threading.Condition()
        # Every decision, and the queues; guarded by _cond. Calls waiting on the hub (a broken
        # stream, a first connect) wait for it as long as a restarting hub may take.
        self._state = CallState(
            actor_id, class_name, max_task_retries, max_pending_calls, clock,
            hub_unreachable_s=max(HUB_UNREACHABLE_S, host.hub.reconnect_s),
        )
        self._thread: threading.Thread | None = None
        self._responses: Any = None  # the live stream's call object, to cancel it
        # Wakes the live stream's writer, on the stream loop; `_bell_rung` keeps it to one
        # pending wake-up however many calls queue up.
        self._wake: asyncio.Event | None = None
        self._bell_rung = False
        self._origins: dict[str, ErrorOrigin] = {}
        self._warned_infeasible = False
        # Where this actor's processes were: their channels go when the actor is forgotten.
        self.addresses: set[str] = set()

    # -- submitting ------------------------------------------------------------------------
    def submit(
        self, method: str, args: bytes, num_returns: int, max_task_retries: int | None,
        trace: dict[str, str] | None = None, group: str | None = None, stream: ItemSink | None = None,
    ) -> list[str]:
        """Queue a call; returns the ids of its results (owned by this process).

        With `stream`, a streaming call: its items are delivered there as they come, each as
        `<its result's id>.<index>`, and its one result completes when it ends."""
        seq = next(_call_numbers)
        prefix = f"{self._host.caller_id}.{seq:x}"
        object_ids = [f"{prefix}.{i}" for i in range(num_returns)] if num_returns != 1 else [prefix]
        state = self._state
        retries = state.max_task_retries if max_task_retries is None else max_task_retries
        call = PendingCall(seq, method, args, num_returns, object_ids, retries, trace, group, stream)
        origin = self._origins.get(method)
        if origin is None:
            origin = self._origins[method] = ErrorOrigin(f"{self.class_name}.{method}", self.actor_id, self.class_name)
        with self._cond:
            dead = state.submitted(call)  # raises PendingCallsLimitExceededError, queuing nothing
            # Before the lock is released: the call's reply may arrive before submit() returns.
            self._host.objects.create_pending(object_ids, origin)
            if dead is None:
                self._host.note_unsent(self)
                self._ring_locked()
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name=f"actorhub-conn-{self.actor_id[:8]}", daemon=True
                    )
                    self._thread.start()
        if dead is not None:
            self._host.objects.complete_many([(oid, None, dead) for oid in object_ids])
        return object_ids

    def cancel(self, object_id: str) -> bool:
        """cancel() of the call that makes `object_id` (one of this connection's: see submit);
        False when the id is not a call result of this process."""
        prefix, _, rest = object_id.partition(".")
        seq_text = rest.partition(".")[0]
        if prefix != self._host.caller_id or not seq_text:
            return False
        try:
            seq = int(seq_text, 16)
        except ValueError:
            return False
        with self._cond:
            completions, ring = self._state.cancel(seq)
            if ring:
                self._ring_locked()
        if completions:
            self._host.objects.complete_many(completions)
        return True

    def cancel_after(self, mark: int) -> None:
        """cancel() of every call made here after `mark` and not settled yet (`call_mark`)."""
        completions: list[Completion] = []
        with self._cond:
            ring = False
            for seq in self._state.seqs_after(mark):
                done, wake = self._state.cancel(seq)
                completions.extend(done)
                ring = ring or wake
            if ring:
                self._ring_locked()
        if completions:
            self._host.objects.complete_many(completions)

    def wait_accepted(self, deadline: float) -> None:
        """Block until the actor has taken in every call queued here so far (it replied, or
        acknowledged a sync batch sent after them). Gives up at `deadline` (time.monotonic), or
        when the actor is not alive now: a pending or restarting actor keeps its calls queued,
        and waiting for it would hold up the reply for nothing.

        Why: a call that a task or actor method makes without waiting for it, as its last act,
        should reach its actor before whoever gets the method's result can send a call there too.
        """
        state = self._state
        with self._cond:
            target = state.last_seq
            if state.taken_in(target):
                return
            state.send_waiters += 1
            if state.want_sync(target):
                self._ring_locked()
            try:
                while not state.wait_over(target):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                state.send_waiters -= 1

    def settled(self) -> bool:
        """Every call queued here so far was taken in by the actor (see wait_accepted)."""
        with self._cond:
            return self._state.taken_in(self._state.last_seq)

    def close(self) -> None:
        with self._cond:
            self._state.close()
            self._cond.notify_all()
            responses = self._responses
        if responses is not None:
            self._host.streams.call_soon(responses.cancel)

    # -- the connection's thread --------------------------------------------------------------
    def _run(self) -> None:
        """Carry out the state's decisions, and feed it what came of them, until it says stop."""
        with self._cond:
            step = self._decided_locked(self._state.start())
        while True:
            if step.fail:
                self._host.objects.complete_many(step.fail)
            action = step.action
            if action is None:
                with self._cond:
                    dead = self._state.dead is not None and not self._state.closed
                if dead:
                    # Every call it held has failed, and a late submit() fails at once here.
                    self._host.forget_connection(self)
                return
            if isinstance(action, AskHub):
                answer = self._ask_hub(action)
                with self._cond:
                    if isinstance(answer, HubFailure):
                        step = self._decided_locked(self._state.hub_failed(answer))
                    else:
                        step = self._decided_locked(self._state.hub_said(answer))
            elif isinstance(action, Pause):
                time.sleep(action.seconds)
                with self._cond:
                    step = self._decided_locked(self._state.paused())
            else:
                taken, code, details, moved = self._pump(action)
                with self._cond:
                    step = self._decided_locked(self._state.stream_ended(taken, code, details, moved))

    def _decided_locked(self, step: Step) -> Step:
        if step.ring:
            self._ring_locked()
        # The state may have changed what waiters in wait_accepted wait for (the actor not
        # alive, dead, calls failed); they check again, so a needless wake-up costs nothing.
        self._cond.notify_all()
        return step

    # == I/O with the hub: the only place this module talks to it ==============================
    def _ask_hub(self, ask: AskHub) -> common_pb2.ActorInfo | HubFailure:
        """One long poll of the hub for the actor at `ask.min_incarnation` or newer."""
        try:
            info = self._host.hub.wait_actor(self.actor_id, ask.min_incarnation, ask.timeout_s)
        except ValueError:  # the hub has no such actor
            return HubFailure("NOT_FOUND", unknown_actor=True)
        except RpcFailedError as e:
            # A stream that is up needs no hub: only calls waiting to (re)connect wait for it.
            code = e.code.name if e.code is not None else "UNKNOWN"
            reason = f"{code}: the control plane at {self._host.hub.address} is down or recovering"
            return HubFailure(reason, unknown_actor=False)
        if info.infeasible and not self._warned_infeasible:
            # As Ray does: a request no node can fit waits (a node may join), but not silently.
            self._warned_infeasible = True
            log.warning(
                "The actor %s (%s) cannot be scheduled right now: %s. It stays pending until a node "
                "that can fit it joins the cluster.", self.class_name, self.actor_id, info.pending_reason,
            )
        return info

    # == I/O with the actor: one stream ========================================================
    def _pump(self, connect: Connect) -> tuple[bool, str, str, bool]:
        """Run one stream until it ends: (taken by the worker, error code name or "", details,
        ended by a drain).

        The stream itself runs on the process's stream loop (wire/stream_loop.py); this thread
        waits for its end, and decides what comes next under the condition."""
        stream = _Stream(connect.incarnation)
        self.addresses.add(connect.address)
        return self._host.streams.submit(self._run_stream(stream, connect.address)).result()

    async def _run_stream(self, stream: _Stream, address: str) -> tuple[bool, str, str, bool]:
        call = self._host.streams.channel(address).stream_stream(
            _CALL_STREAM,
            request_serializer=worker_pb2.CallBatch.SerializeToString,
            response_deserializer=worker_pb2.ReplyBatch.FromString,
        )(None)  # no request iterator: _write() writes each batch
        wake = asyncio.Event()
        with self._cond:
            self._responses = call
            self._wake = wake
            self._bell_rung = False
            if self._state.closed:
                call.cancel()
        writer = asyncio.ensure_future(self._write(call, stream, wake))
        taken, code, details, moved = False, "", "", False
        try:
            # The worker sends this header once it took the stream, before running any call.
            metadata = await call.initial_metadata()
            taken = metadata is not None and STREAM_TAKEN[1] in metadata.get_all(STREAM_TAKEN[0])
            while True:
                batch = await call.read()
                if batch is grpc.aio.EOF:
                    break
                self._on_replies(batch)
            # A stream the worker ended without an error status still ended: its status says how.
            status = await call.code()
            if status != grpc.StatusCode.OK and not self._state.closed:
                code, details = status.name, (await call.details()) or ""
            elif status == grpc.StatusCode.OK:
                trailer = await call.trailing_metadata()  # a drain's (worker/drain.py)
                moved = trailer is not None and STREAM_MOVED[1] in trailer.get_all(STREAM_MOVED[0])
        except asyncio.CancelledError:
            pass  # closed by us: close() cancelled the call
        except grpc.RpcError as e:
            if not self._state.closed:
                log.debug("stream to %s (%s) ended: %s", self.actor_id, address, e)
                code, details = e.code().name, e.details() or ""
        finally:
            writer.cancel()
            call.cancel()
            with self._cond:
                stream.closed = True
                self._responses = None
                self._wake = None
                self._cond.notify_all()
        return taken, code, details, moved

    async def _write(self, call: Any, stream: _Stream, wake: asyncio.Event) -> None:
        # The first batch names the actor, even if empty, so the worker can refuse a stream
        # meant for another incarnation before any call is lost.
        batch: worker_pb2.CallBatch | None = worker_pb2.CallBatch(
            actor_id=self.actor_id, incarnation=stream.incarnation, caller_id=self._host.caller_id,
            caller_address=self._host.address, caller_node_id=self._host.node_id,
        )
        cond = self._cond
        state = self._state
        try:
            while True:
                if batch is None:
                    await wake.wait()
                    wake.clear()
                with cond:
                    if stream.closed or state.closed:
                        return
                    self._bell_rung = False
                    if batch is None:
                        if not state.has_batch():
                            continue  # rung for calls another write already took
                        batch = worker_pb2.CallBatch()
                    state.send_into(batch)
                await call.write(batch)
                batch = None
        except (asyncio.CancelledError, grpc.RpcError, grpc.aio.UsageError):
            return  # the stream ended: the reading side reports how

    def _on_replies(self, batch: worker_pb2.ReplyBatch) -> None:
        items: list[tuple[PendingCall, worker_pb2.Reply]] = []
        with self._cond:
            state = self._state
            completions, lent = state.replies_received(batch, items)
            if state.send_waiters:
                self._cond.notify_all()  # a reply also means its call was taken in
            if lent is not None:
                # Pinned before completion: completing releases the call's arguments.
                for object_ids, reply in lent:
                    if reply.contained:
                        self._host.borrowing.accept_lent(object_ids, lent_refs(reply.contained))
                    if reply.store_ids:
                        self._host.objects.store_results(object_ids, reply.store_ids, reply.store_sizes)
        if items:
            self._deliver_items(items)  # before the completions: a call's items come before its end
        self._host.objects.complete_many(completions)

    def _deliver_items(self, items: list[tuple[PendingCall, worker_pb2.Reply]]) -> None:
        """Streamed items, each wanted by its call's stream: made objects of this process, then
        handed to the stream (runtime/item_stream.py)."""
        objects = self._host.objects
        done: list[tuple[str, bytes | None, RemoteError | None]] = []
        for call, reply in items:
            object_id = f"{call.object_ids[0]}.{reply.stream_index}"
            origin = call.stream.origin if call.stream is not None else None
            objects.create_pending([object_id], origin or self._origins[call.method])
            if reply.HasField("error"):
                done.append((object_id, None, from_error_info(reply.error)))
                continue
            if reply.contained:
                self._host.borrowing.accept_lent([object_id], lent_refs(reply.contained))
            if reply.store_ids:
                objects.store_results([object_id], reply.store_ids, reply.store_sizes)
            done.append((object_id, reply.values[0], None))  # one value per item (b"" when stored)
        objects.complete_many(done)
        for (call, _), (object_id, _, _) in zip(items, done, strict=True):
            if call.stream is not None:
                call.stream.deliver(object_id)

    def _ring_locked(self) -> None:
        # One wake-up however many calls queue up: the writer drains them all. No stream yet:
        # the stream's writer sends what is queued when it starts.
        if not self._bell_rung and self._wake is not None:
            self._bell_rung = True
            self._host.streams.call_soon(self._wake.set)
