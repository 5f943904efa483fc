"""The caller's side of an actor: one long-lived gRPC stream per (this process, actor).

Calls from every thread of this process to one actor go into one queue, so they reach the
actor in the order they were submitted. gRPC's request thread drains the whole queue into one
CallBatch per send, so calls made faster than the network takes them travel together. The
connection's own thread reads replies, and when the stream breaks it asks the hub what became
of the actor (restarted or dead) before deciding the fate of the calls that were in flight.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

import grpc

from actorhub._proto.v1 import common_pb2, hub_pb2, hub_pb2_grpc, worker_pb2
from actorhub.exceptions import PendingCallsLimitExceededError
from actorhub.runtime.borrowing import Borrowing
from actorhub.runtime.object_table import Completion, ErrorOrigin, ObjectTable
from actorhub.wire.errors import system_error
from actorhub.wire.transport import STREAM_TAKEN, ChannelPool

log = logging.getLogger(__name__)

_CALL_STREAM = "/actorhub.v1.Worker/CallStream"
_ALIVE = common_pb2.ACTOR_STATE_ALIVE
_DEAD = common_pb2.ACTOR_STATE_DEAD
# How long a broken stream waits for the hub to report a restart before calling it transient.
_RESTART_WAIT_S = 30.0
# How long calls wait for an unreachable hub before failing with ActorUnavailableError.
_HUB_UNREACHABLE_S = 10.0
_POLL_S = 2.0
# After a stream the actor never took: how long to wait for news of a restart before trying again.
_RECONNECT_WAIT_S = 0.5

_call_numbers = itertools.count(1)


class ConnectionHost(Protocol):
    """What a connection needs from the process runtime."""

    objects: ObjectTable
    channels: ChannelPool
    hub: hub_pb2_grpc.HubStub
    caller_id: str
    address: str
    borrowing: Borrowing

    @property
    def node_id(self) -> str: ...  # read-only: part of the runtime's fixed identity

    def note_unsent(self, conn: ActorConnection) -> None: ...


class _PendingCall:
    __slots__ = ("args", "method", "num_returns", "object_ids", "retries_left", "seq", "trace")

    def __init__(
        self, seq: int, method: str, args: bytes, num_returns: int, object_ids: list[str], retries: int,
        trace: dict[str, str] | None = None,
    ) -> None:
        self.trace = trace
        self.seq = seq
        self.method = method
        self.args = args
        self.num_returns = num_returns
        self.object_ids = object_ids
        self.retries_left = retries


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
    ) -> None:
        self._host = host
        self.actor_id = actor_id
        self.class_name = class_name
        self._max_task_retries = max_task_retries
        self._max_pending = max_pending_calls
        self._cond = threading.Condition()
        self._unsent: deque[_PendingCall] = deque()
        self._inflight: dict[int, _PendingCall] = {}
        self._dead: common_pb2.ErrorInfo | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._responses: Any = None  # the live stream's call object, to cancel it
        # Wakes gRPC's request thread. A C-level queue wakes a blocked thread faster than a
        # Condition; `_bell_rung` keeps it to one pending token however many calls queue up.
        self._doorbell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._bell_rung = False
        self._origins: dict[str, ErrorOrigin] = {}
        self._broken_by = ""  # how the last stream ended, for the error of the calls it took
        # For wait_accepted(): the newest call queued, the sync point asked for, sent and
        # acknowledged (per stream), how many threads wait on one, and whether the hub said the
        # actor is not alive now (its calls wait, not the reply).
        self._last_seq = 0
        self._sync_wanted = 0
        self._sync_sent = 0
        self._accepted_seq = 0
        self._send_waiters = 0
        self._actor_unready = False

    # -- submitting ------------------------------------------------------------------------
    def submit(
        self, method: str, args: bytes, num_returns: int, max_task_retries: int | None,
        trace: dict[str, str] | None = None,
    ) -> list[str]:
        """Queue a call; returns the ids of its results (owned by this process)."""
        seq = next(_call_numbers)
        prefix = f"{self._host.caller_id}.{seq:x}"
        object_ids = [f"{prefix}.{i}" for i in range(num_returns)] if num_returns != 1 else [prefix]
        retries = self._max_task_retries if max_task_retries is None else max_task_retries
        call = _PendingCall(seq, method, args, num_returns, object_ids, retries, trace)
        origin = self._origins.get(method)
        if origin is None:
            origin = self._origins[method] = ErrorOrigin(f"{self.class_name}.{method}", self.actor_id, self.class_name)
        with self._cond:
            dead = self._dead
            if dead is None and 0 <= self._max_pending <= len(self._unsent) + len(self._inflight):
                raise PendingCallsLimitExceededError(
                    f"{self.class_name} actor {self.actor_id} already has {self._max_pending} calls "
                    f"pending (max_pending_calls={self._max_pending}); {method} was not sent"
                )
            # Before the call is queued: its reply may arrive before submit() returns.
            self._host.objects.create_pending(object_ids, origin)
            if dead is None:
                self._unsent.append(call)
                self._last_seq = seq
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

    def wait_accepted(self, deadline: float) -> None:
        """Block until the actor has taken in every call queued here so far (it replied, or
        acknowledged a sync batch sent after them). Gives up at `deadline`, or when the actor
        is not alive now: a pending or restarting actor keeps its calls queued, and waiting for
        it would hold up the reply for nothing.

        Why: a call that a task or actor method makes without waiting for it, as its last act,
        should reach its actor before whoever gets the method's result can send a call there too.
        """
        with self._cond:
            target = self._last_seq
            if self._taken_in(target):
                return
            self._send_waiters += 1
            if self._sync_wanted < target:
                self._sync_wanted = target
                self._ring_locked()
            try:
                while not self._taken_in(target) and not (
                    self._closed or self._dead is not None or self._actor_unready
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._send_waiters -= 1

    def settled(self) -> bool:
        """Every call queued here so far was taken in by the actor (see wait_accepted)."""
        with self._cond:
            return self._taken_in(self._last_seq)

    def _taken_in(self, target: int) -> bool:
        # Under _cond. Retried calls go back to the front of _unsent, so its head is its oldest.
        if self._unsent and self._unsent[0].seq <= target:
            return False
        return self._accepted_seq >= target or not self._inflight or min(self._inflight) > target

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            responses = self._responses
        self._doorbell.put(None)
        if responses is not None:
            responses.cancel()

    # -- the connection's thread --------------------------------------------------------------
    def _run(self) -> None:
        min_incarnation = 0
        while not self._closed:
            info = self._wait_actor(min_incarnation, timeout=None)
            if info is None:
                return
            if info.state == _DEAD:
                self._die(info.death_cause)
                return
            stream = _Stream(info.incarnation)
            self._broken_by = ""
            accepted = self._pump(info.address, stream)
            if self._closed:
                return
            if accepted:
                self._set_unready(True)
            else:
                # The actor never took the stream (a connect that failed or timed out): none of
                # its calls reached it, so they go again, uncounted, once the hub says where it is.
                self._requeue_inflight()
            after = self._wait_actor(info.incarnation + 1, timeout=_RESTART_WAIT_S if accepted else _RECONNECT_WAIT_S)
            if after is None:
                return
            if after.state == _DEAD:
                self._die(after.death_cause)
                return
            if not accepted:
                min_incarnation = max(info.incarnation, after.incarnation)
                continue
            if after.incarnation > info.incarnation:
                self._settle_inflight(
                    f"the {self.class_name} actor's process died while running this call "
                    f"(incarnation {info.incarnation}); the actor was restarted",
                    common_pb2.ERROR_KIND_ACTOR_DIED,
                )
                min_incarnation = after.incarnation
            else:
                self._settle_inflight(
                    f"the connection to the {self.class_name} actor broke while running this call"
                    f"{self._broken_by}",
                    common_pb2.ERROR_KIND_ACTOR_UNAVAILABLE,
                )
                min_incarnation = info.incarnation

    def _wait_actor(self, min_incarnation: int, timeout: float | None) -> common_pb2.ActorInfo | None:
        """Long-poll the hub; None when this connection was closed meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable_since: float | None = None
        # A first short poll, unless the actor is known not alive: a reply waiting on this
        # connection's calls learns at once that the actor is pending, not after a long poll.
        quick = not self._actor_unready
        while not self._closed:
            step = _POLL_S if deadline is None else max(0.01, min(_POLL_S, deadline - time.monotonic()))
            if quick:
                step, quick = 0.01, False
            try:
                info: common_pb2.ActorInfo = self._host.hub.WaitActor(
                    hub_pb2.WaitActorRequest(
                        actor_id=self.actor_id, min_incarnation=min_incarnation, timeout_s=step
                    ),
                    timeout=step + 10,
                )
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return _dead_info(f"the hub does not know actor {self.actor_id}")
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > _HUB_UNREACHABLE_S:
                    self._settle_all(
                        f"the hub is unreachable ({e.code().name}); cannot reach the "
                        f"{self.class_name} actor",
                        common_pb2.ERROR_KIND_ACTOR_UNAVAILABLE,
                    )
                    unreachable_since = now
                time.sleep(0.2)
                continue
            unreachable_since = None
            if info.state == _DEAD or (info.state == _ALIVE and info.incarnation >= min_incarnation):
                return info
            self._set_unready(True)
            if deadline is not None and time.monotonic() >= deadline:
                return info
        return None

    def _set_unready(self, unready: bool) -> None:
        with self._cond:
            self._actor_unready = unready
            if unready:
                self._cond.notify_all()

    def _pump(self, address: str, stream: _Stream) -> bool:
        """Run one stream to `address` until it ends; False if the worker never took it."""
        self._set_unready(False)
        channel = self._host.channels.get(address)
        call = channel.stream_stream(
            _CALL_STREAM,
            request_serializer=worker_pb2.CallBatch.SerializeToString,
            response_deserializer=worker_pb2.ReplyBatch.FromString,
        )
        responses = call(self._requests(stream))
        with self._cond:
            self._responses = responses
            if self._closed:
                responses.cancel()
        accepted = False
        try:
            # The worker sends this header once it took the stream, before running any call.
            accepted = STREAM_TAKEN in (responses.initial_metadata() or ())
            for batch in responses:
                self._on_replies(batch)
        except grpc.RpcError as e:
            if not self._closed:
                log.debug("stream to %s (%s) ended: %s", self.actor_id, address, e)
                self._broken_by = f" ({e.code().name}: {e.details()})"
        finally:
            with self._cond:
                stream.closed = True
                self._responses = None
                self._cond.notify_all()
            self._doorbell.put(None)  # lets the request generator see the stream closed
        return accepted

    def _requests(self, stream: _Stream) -> Iterator[worker_pb2.CallBatch]:
        # Runs on gRPC's request thread. The first batch names the actor, even if empty, so the
        # worker can refuse a stream meant for another incarnation before any call is lost.
        batch: worker_pb2.CallBatch | None = worker_pb2.CallBatch(
            actor_id=self.actor_id, incarnation=stream.incarnation, caller_id=self._host.caller_id,
            caller_address=self._host.address, caller_node_id=self._host.node_id,
        )
        cond = self._cond
        unsent = self._unsent
        inflight = self._inflight
        ring = self._doorbell.get
        with cond:
            self._sync_sent = self._accepted_seq = 0  # acknowledgements are per stream
        while True:
            if batch is None:
                ring()
            with cond:
                if stream.closed or self._closed:
                    return
                self._bell_rung = False
                sync = self._sync_wanted > self._sync_sent
                if not unsent and batch is None and not sync:
                    continue  # a stale token from an earlier stream
                if batch is None:
                    batch = worker_pb2.CallBatch()
                add = batch.calls.add
                while unsent:
                    c = unsent.popleft()
                    inflight[c.seq] = c
                    sent = add(seq=c.seq, method=c.method, args=c.args, num_returns=c.num_returns)
                    if c.trace:
                        sent.trace_context.update(c.trace)
                if sync:
                    # Every call up to _sync_wanted is in this batch or an earlier one by now, so
                    # the actor taking this batch in has taken them all.
                    batch.sync_seq = self._sync_sent = self._sync_wanted
            yield batch
            batch = None

    def _on_replies(self, batch: worker_pb2.ReplyBatch) -> None:
        completions: list[Completion] = []
        with self._cond:
            if self._send_waiters:
                if batch.accepted_seq > self._accepted_seq:
                    self._accepted_seq = batch.accepted_seq
                self._cond.notify_all()  # a reply also means its call was taken in
            inflight = self._inflight
            for reply in batch.replies:
                call = inflight.pop(reply.seq, None)
                if call is None:
                    # Settled already (given up on): what came with it goes straight back.
                    if reply.contained:
                        self._host.borrowing.accept_lent([], reply.contained)
                    if reply.store_ids:
                        self._host.objects.store_results([], reply.store_ids)
                    continue
                if reply.HasField("error"):
                    completions.extend((oid, None, reply.error) for oid in call.object_ids)
                else:
                    if reply.contained:
                        # Pinned before completion: completing releases the call's arguments.
                        self._host.borrowing.accept_lent(call.object_ids, reply.contained)
                    if reply.store_ids:
                        self._host.objects.store_results(call.object_ids, reply.store_ids)
                    completions.extend(zip(call.object_ids, reply.values, itertools.repeat(None)))
        self._host.objects.complete_many(completions)

    # -- failures ---------------------------------------------------------------------------
    def _settle_inflight(self, message: str, kind: common_pb2.ErrorKind) -> None:
        """Retry the calls that were in flight where max_task_retries allows; fail the rest."""
        failed: list[_PendingCall] = []
        with self._cond:
            retry: list[_PendingCall] = []
            for call in sorted(self._inflight.values(), key=lambda c: c.seq):
                if call.retries_left != 0:
                    if call.retries_left > 0:  # -1: without limit
                        call.retries_left -= 1
                    retry.append(call)
                else:
                    failed.append(call)
            self._inflight.clear()
            self._put_back_locked(retry)
        self._fail(failed, message, kind)

    def _requeue_inflight(self) -> None:
        """Calls sent on a stream the actor never took: first in line again, retries untouched."""
        with self._cond:
            calls = sorted(self._inflight.values(), key=lambda c: c.seq)
            self._inflight.clear()
            self._put_back_locked(calls)

    def _put_back_locked(self, calls: list[_PendingCall]) -> None:
        # Ahead of the unsent ones, in caller order: this caller's order holds on the next stream.
        self._unsent.extendleft(reversed(calls))
        if self._unsent:
            self._ring_locked()

    def _ring_locked(self) -> None:
        # One token however many calls queue up: the request thread drains them all.
        if not self._bell_rung:
            self._bell_rung = True
            self._doorbell.put(None)

    def _take_all(self) -> list[_PendingCall]:
        """Every call in flight then every unsent one, in caller order; the caller holds _cond."""
        calls = sorted(self._inflight.values(), key=lambda c: c.seq) + list(self._unsent)
        self._inflight.clear()
        self._unsent.clear()
        return calls

    def _settle_all(self, message: str, kind: common_pb2.ErrorKind) -> None:
        with self._cond:
            failed = self._take_all()
        self._fail(failed, message, kind)

    def _die(self, cause: common_pb2.ErrorInfo) -> None:
        if not cause.message:
            cause = system_error(f"the {self.class_name} actor {self.actor_id} is dead", _DEAD_KIND)
        with self._cond:
            self._dead = cause
            failed = self._take_all()
            self._cond.notify_all()
        self._host.objects.complete_many([(oid, None, cause) for c in failed for oid in c.object_ids])

    def _fail(self, calls: list[_PendingCall], message: str, kind: common_pb2.ErrorKind) -> None:
        if calls:
            completions: list[Completion] = []
            for call in calls:
                info = system_error(f"{self.class_name}.{call.method}: {message}", kind)
                completions.extend((oid, None, info) for oid in call.object_ids)
            self._host.objects.complete_many(completions)


_DEAD_KIND = common_pb2.ERROR_KIND_ACTOR_DIED


def _dead_info(message: str) -> common_pb2.ActorInfo:
    return common_pb2.ActorInfo(state=_DEAD, death_cause=system_error(message, _DEAD_KIND))
