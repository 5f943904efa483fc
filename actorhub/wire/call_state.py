"""The caller's side of one actor as a state machine: what `ActorConnection` decides, with no I/O.

No gRPC, threads or sleeping here. `ActorConnection` (`call_stream`) holds its condition while
it feeds this object events (a call submitted, a batch about to be sent, replies received, a
stream that ended, what the hub said, a pause that passed) and carries out what comes back:
calls to complete or fail (`Step.fail`, completions for the object table), the next thing its
thread does (`AskHub`, `Connect`, `Pause`, or stop), and whether to wake the stream's
writer. Time comes from an injected clock, so the 30 s and 10 s waits are testable at once.

The rules, in short (ARCHITECTURE.md, "The call path"):
- Calls go in caller order: retried and untaken calls go back ahead of the unsent ones.
- A stream the actor took that then ended: ask the hub for a newer incarnation (up to
  `RESTART_WAIT_S`). Newer: in-flight calls are retried where `max_task_retries` allows, else
  fail with ActorDiedError. Same incarnation after the wait: they fail with
  ActorUnavailableError (or are retried) and the connection reconnects. Dead: everything fails.
- A stream never taken delivered nothing: its calls go first in line again, retries untouched,
  and the hub is asked again after `RECONNECT_WAIT_S`.
- A stream a drain ended (`moved`, worker/drain.py) ran none of the calls it did not answer:
  they go first in line again, retries untouched, for the next incarnation (or the death).
- A hub unreachable for `hub_unreachable_s` (at least `HUB_UNREACHABLE_S`; the connection
  gives its process's hub reconnect timeout, as long as a restarting hub may take) fails every
  call with ActorUnavailableError. A stream that is up never needs the hub.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol

from actorhub._proto.v1 import common_pb2, worker_pb2
from actorhub.exceptions import PendingCallsLimitExceededError
from actorhub.runtime.object_table import Completion, ErrorOrigin
from actorhub.runtime.tracing import SENT_AT_KEY
from actorhub.wire.errors import ErrorKind, RemoteError, from_error_info, system_error

_ALIVE = common_pb2.ACTOR_STATE_ALIVE
_DEAD = common_pb2.ACTOR_STATE_DEAD
_DIED = ErrorKind.ACTOR_DIED
_UNAVAILABLE = ErrorKind.ACTOR_UNAVAILABLE
_CANCELLED = ErrorKind.TASK_CANCELLED

# How long a broken stream waits for the hub to report a restart before calling it transient.
RESTART_WAIT_S = 30.0
# How long calls wait for an unreachable hub before failing with ActorUnavailableError, at least.
HUB_UNREACHABLE_S = 10.0
# The longest single long poll of the hub.
POLL_S = 2.0
# The first poll of a wait, unless the actor is known not alive: a reply waiting on this
# connection's calls learns at once that the actor is pending, not after a long poll.
QUICK_POLL_S = 0.01
# After a stream the actor never took: how long to wait for news of a restart before trying again.
RECONNECT_WAIT_S = 0.5
# Between attempts to reach an unreachable hub.
HUB_RETRY_S = 0.2


class ItemSink(Protocol):
    """Where a streaming call's items go (runtime/item_stream.ItemStream)."""

    origin: ErrorOrigin | None

    def wants(self, index: int) -> bool: ...

    def deliver(self, object_id: str) -> None: ...


class PendingCall:
    __slots__ = ("args", "group", "method", "num_returns", "object_ids", "retries_left", "seq", "stream", "trace")

    def __init__(
        self, seq: int, method: str, args: bytes, num_returns: int, object_ids: list[str], retries: int,
        trace: dict[str, str] | None = None, group: str | None = None, stream: ItemSink | None = None,
    ) -> None:
        self.trace = trace
        self.stream = stream  # a streaming call's items go there (runtime/item_stream.py)
        self.group = group  # `.options(concurrency_group=...)`; None: the method's own
        self.seq = seq
        self.method = method
        self.args = args
        self.num_returns = num_returns
        self.object_ids = object_ids
        self.retries_left = retries  # -1: without limit


# -- what the connection's thread does next --------------------------------------------------
class AskHub(NamedTuple):
    """Long-poll the hub for the actor at `min_incarnation` or newer, for up to `timeout_s`."""

    min_incarnation: int
    timeout_s: float


class Connect(NamedTuple):
    """Open a stream to this incarnation of the actor and run it until it ends."""

    address: str
    incarnation: int


class Pause(NamedTuple):
    """Sleep, then report `paused()`."""

    seconds: float


class HubFailure(NamedTuple):
    """The hub could not answer: `unknown_actor` when it does not know the actor at all."""

    reason: str
    unknown_actor: bool = False


Action = AskHub | Connect | Pause | None  # None: the thread ends (closed or actor dead)


class Step:
    """A decision: the next action, the calls to complete (outside the lock), and whether calls
    were put back in the queue (the stream's writer must be woken)."""

    __slots__ = ("action", "fail", "ring")

    def __init__(self, action: Action, fail: list[Completion] | None = None, ring: bool = False) -> None:
        self.action = action
        self.fail: list[Completion] = fail if fail is not None else []
        self.ring = ring


# Arguments per CallBatch: calls made faster than they are sent travel together, but a batch
# stays far below any message limit and a large one does not hold back the calls behind it.
BATCH_BYTES = 4 * 1024 * 1024


class CallState:
    """Every field and method is guarded by the owning connection's condition."""

    def __init__(
        self,
        actor_id: str,
        class_name: str,
        max_task_retries: int,
        max_pending_calls: int,
        clock: Callable[[], float] = time.monotonic,
        hub_unreachable_s: float = HUB_UNREACHABLE_S,
    ) -> None:
        self.actor_id = actor_id
        self._hub_unreachable_s = hub_unreachable_s
        self.class_name = class_name
        self.max_task_retries = max_task_retries
        self._max_pending = max_pending_calls
        self._clock = clock
        self.unsent: deque[PendingCall] = deque()
        self.inflight: dict[int, PendingCall] = {}
        self.dead: RemoteError | None = None
        self.closed = False
        # Delivery before reply (wait_accepted): the newest call queued, the sync point asked
        # for, sent and acknowledged (per stream), how many threads wait on one, and whether the
        # hub said the actor is not alive now (its calls wait, not the reply).
        self.last_seq = 0
        self.sync_wanted = 0
        self.sync_sent = 0
        self.accepted_seq = 0
        self.send_waiters = 0
        self.actor_unready = False
        # The connection thread's wait on the hub: at least this incarnation, until `_deadline`
        # (None: no limit). `_after_taken` is None for a wait before connecting, else it follows
        # a stream to `_incarnation` and says whether the actor took that stream.
        self._min_incarnation = 0
        self._deadline: float | None = None
        self._quick = False
        self._unreachable_since: float | None = None
        self._incarnation = 0
        self._after_taken: bool | None = None
        self._broken_by = ""  # how the last stream ended, for the error of the calls it took
        # cancel(): calls in flight the caller cancelled (never retried; their reply decides) and
        # those of them whose cancel is still to be sent on the stream.
        self.cancelled: set[int] = set()
        self.cancels_unsent: list[int] = []

    # -- the submitting threads (hot path) --------------------------------------------------------
    def submitted(self, call: PendingCall) -> RemoteError | None:
        """Queue `call`; returns the death cause instead when the actor is dead (nothing queued).
        Raises PendingCallsLimitExceededError past `max_pending_calls` (nothing queued)."""
        dead = self.dead
        if dead is not None:
            return dead
        if 0 <= self._max_pending <= len(self.unsent) + len(self.inflight):
            raise PendingCallsLimitExceededError(
                f"{self.class_name} actor {self.actor_id} already has {self._max_pending} calls "
                f"pending (max_pending_calls={self._max_pending}); {call.method} was not sent"
            )
        self.unsent.append(call)
        self.last_seq = call.seq
        return None

    def has_batch(self) -> bool:
        """Something to send: calls, or a sync point not sent yet."""
        return bool(self.unsent) or self.sync_wanted > self.sync_sent or bool(self.cancels_unsent)

    def send_into(self, batch: worker_pb2.CallBatch, max_bytes: int = BATCH_BYTES) -> None:
        """The stream's writer is about to send `batch`: unsent calls go into it, up to about
        `max_bytes` of arguments (at least one call), and are in flight from now on, with the
        sync point if one is due and every call before it is sent."""
        unsent = self.unsent
        inflight = self.inflight
        add = batch.calls.add
        size = 0
        while unsent:
            c = unsent[0]
            size += len(c.args)
            if size > max_bytes and batch.calls:
                break  # the rest go in the next batch: one message must stay under the limit
            unsent.popleft()
            inflight[c.seq] = c
            sent = add(seq=c.seq, method=c.method, args=c.args, num_returns=c.num_returns)
            if c.trace:
                sent.trace_context.update(c.trace)
                sent.trace_context[SENT_AT_KEY] = str(time.time_ns())  # the callee's span of queue wait starts here
            if c.group:
                sent.concurrency_group = c.group
            if c.stream is not None:
                sent.streaming = True
        if self.cancels_unsent:
            batch.cancel_seqs.extend(self.cancels_unsent)
            self.cancels_unsent.clear()
        if self.sync_wanted > self.sync_sent and (not unsent or unsent[0].seq > self.sync_wanted):
            # Every call up to sync_wanted is in this batch or an earlier one by now, so the actor
            # taking this batch in has taken them all.
            batch.sync_seq = self.sync_sent = self.sync_wanted

    def replies_received(
        self, batch: worker_pb2.ReplyBatch, items: list[tuple[PendingCall, worker_pb2.Reply]] | None = None,
    ) -> tuple[list[Completion], list[tuple[list[str], worker_pb2.Reply]] | None]:
        """Returns the completions, and the replies that lend refs or name stored results, with
        the ids they are for ([] for a call settled already): those must be accepted before the
        completions are applied (completing releases the call's arguments).

        Items of streaming calls go into `items` with their calls, each once (a retried call
        yields its items again): they are made into objects before the completions are applied,
        so that a call's items come before its end."""
        if self.send_waiters and batch.accepted_seq > self.accepted_seq:
            self.accepted_seq = batch.accepted_seq
        completions: list[Completion] = []
        lent: list[tuple[list[str], worker_pb2.Reply]] | None = None
        inflight = self.inflight
        cancelled = self.cancelled
        for reply in batch.replies:
            if reply.stream_item:
                owner = inflight.get(reply.seq)
                if items is not None and owner is not None and owner.stream is not None and (
                    owner.stream.wants(reply.stream_index)
                ):
                    items.append((owner, reply))
                elif reply.contained or reply.store_ids:
                    (lent := lent or []).append(([], reply))  # nobody takes it: what came with it goes back
                continue
            call = inflight.pop(reply.seq, None)
            if cancelled:
                cancelled.discard(reply.seq)
            if call is None:
                # Settled already (given up on): what came with it goes straight back.
                if reply.contained or reply.store_ids:
                    (lent := lent or []).append(([], reply))
                continue
            if reply.HasField("error"):
                # Errors are rare: only they are converted; values go to the table as they came.
                error = from_error_info(reply.error)
                completions.extend((oid, None, error) for oid in call.object_ids)
            else:
                if reply.contained or reply.store_ids:
                    (lent := lent or []).append((call.object_ids, reply))
                completions.extend(zip(call.object_ids, reply.values, itertools.repeat(None)))
        return completions, lent

    # -- cancel ---------------------------------------------------------------------------------------
    def seqs_after(self, mark: int) -> list[int]:
        """The user's calls not settled yet that were made after `mark` (see call_stream.call_mark):
        what a recursive cancel of the task that made them reaches. actorhub's own (`__...__`) stay."""
        return [c.seq for c in (*self.unsent, *self.inflight.values())
                if c.seq > mark and not c.method.startswith("__")]

    def cancel(self, seq: int) -> tuple[list[Completion], bool]:
        """cancel() of call `seq`: (completions, whether the stream's writer must be woken).

        Unsent: it leaves the queue and fails with TaskCancelledError now. In flight: the actor is
        told (CallBatch.cancel_seqs) and its reply settles it; it is never retried. Settled or
        unknown: nothing to do, as Ray does for a finished call.
        """
        for call in self.unsent:
            if call.seq == seq:
                self.unsent.remove(call)
                return self._cancelled_completions([call]), False
        if seq in self.inflight and seq not in self.cancelled:
            self.cancelled.add(seq)
            self.cancels_unsent.append(seq)
            return [], True
        return [], False

    def _cancelled_completions(self, calls: list[PendingCall]) -> list[Completion]:
        completions: list[Completion] = []
        for call in calls:
            self.cancelled.discard(call.seq)
            error = system_error(
                f"{self.class_name}.{call.method} (call {call.object_ids[0] if call.object_ids else call.seq}) "
                "was cancelled", _CANCELLED,
            )
            completions.extend((oid, None, error) for oid in call.object_ids)
        return completions

    def _without_cancelled(self, calls: list[PendingCall]) -> tuple[list[PendingCall], list[Completion]]:
        """Split off the calls the caller cancelled: they fail as cancelled, never go again."""
        if not self.cancelled:
            return calls, []
        gone = [c for c in calls if c.seq in self.cancelled]
        return [c for c in calls if c.seq not in self.cancelled], self._cancelled_completions(gone)

    # -- wait_accepted ------------------------------------------------------------------------------
    def taken_in(self, target: int) -> bool:
        """Every call up to `target` was taken in: replied to, or acknowledged by a sync point."""
        # Retried calls go back to the front of unsent, so its head is its oldest.
        if self.unsent and self.unsent[0].seq <= target:
            return False
        return self.accepted_seq >= target or not self.inflight or min(self.inflight) > target

    def want_sync(self, target: int) -> bool:
        """Ask for a sync point at `target`; True when the stream's writer must be woken for it."""
        if self.sync_wanted < target:
            self.sync_wanted = target
            return True
        return False

    def wait_over(self, target: int) -> bool:
        """A wait for `target` ends: taken in, or nothing to wait for (closed, dead, not alive)."""
        return self.taken_in(target) or self.closed or self.dead is not None or self.actor_unready

    # -- the connection's thread ----------------------------------------------------------------
    def start(self) -> Step:
        return self._ask(0, None, after_taken=None)

    def hub_said(self, info: common_pb2.ActorInfo) -> Step:
        self._unreachable_since = None
        if info.state == _DEAD or (info.state == _ALIVE and info.incarnation >= self._min_incarnation):
            return self._resolved(info)
        self.actor_unready = True
        if self._deadline is not None and self._clock() >= self._deadline:
            return self._resolved(info)
        return self._poll()

    def hub_failed(self, failure: HubFailure) -> Step:
        if failure.unknown_actor:
            return self._die(system_error(f"the hub does not know actor {self.actor_id}", _DIED))
        now = self._clock()
        if self._unreachable_since is None:
            self._unreachable_since = now
        fail: list[Completion] = []
        if now - self._unreachable_since > self._hub_unreachable_s:
            fail = self._fail(self._take_all(), (
                f"the hub is unreachable ({failure.reason}); cannot reach the {self.class_name} actor"
            ), _UNAVAILABLE)
            self._unreachable_since = now
        return Step(Pause(HUB_RETRY_S), fail)

    def paused(self) -> Step:
        return self._poll()

    def stream_ended(self, taken: bool, code: str = "", details: str = "", moved: bool = False) -> Step:
        """The stream to the incarnation last connected to ended: `taken` when the actor sent
        the header that says it took the stream; `code` when it ended with an error; `moved`
        when a drain ended it (its trailer says so)."""
        if self.closed:
            return Step(None)
        incarnation = self._incarnation
        if moved:
            return self._moved(incarnation)
        if code:
            self._broken_by = f" ({code}: {details})"
        ring = False
        cancelled: list[Completion] = []
        self.cancels_unsent.clear()  # a cancel is per stream; the calls it named are settled below
        if taken:
            self.actor_unready = True
        else:
            # None of its calls reached the actor: they go again, uncounted, once the hub says
            # where it is.
            again, cancelled = self._without_cancelled(sorted(self.inflight.values(), key=_by_seq))
            ring = self._put_back(again)
        step = self._ask(incarnation + 1, RESTART_WAIT_S if taken else RECONNECT_WAIT_S, after_taken=taken)
        step.ring = step.ring or ring
        step.fail.extend(cancelled)
        return step

    def close(self) -> None:
        self.closed = True

    def _moved(self, incarnation: int) -> Step:
        """The actor is leaving its node (a drain) and sends its restart's incarnation, or its
        death, through the hub: its unanswered calls wait for that, as if never sent."""
        self.cancels_unsent.clear()
        again, cancelled = self._without_cancelled(sorted(self.inflight.values(), key=_by_seq))
        ring = self._put_back(again)
        self.actor_unready = True
        step = self._ask(incarnation + 1, None, after_taken=None)
        step.ring = step.ring or ring
        step.fail.extend(cancelled)
        return step

    # -- inside the thread's decisions ------------------------------------------------------------
    def _ask(self, min_incarnation: int, timeout: float | None, after_taken: bool | None) -> Step:
        self._min_incarnation = min_incarnation
        self._deadline = None if timeout is None else self._clock() + timeout
        self._unreachable_since = None
        self._quick = not self.actor_unready
        self._after_taken = after_taken
        return self._poll()

    def _poll(self) -> Step:
        if self.closed:
            return Step(None)
        if self._quick:
            self._quick = False
            return Step(AskHub(self._min_incarnation, QUICK_POLL_S))
        if self._deadline is None:
            return Step(AskHub(self._min_incarnation, POLL_S))
        return Step(AskHub(self._min_incarnation, max(0.01, min(POLL_S, self._deadline - self._clock()))))

    def _resolved(self, info: common_pb2.ActorInfo) -> Step:
        """The wait on the hub is over with `info`: the actor as wanted, dead, or the deadline."""
        if info.state == _DEAD:
            return self._die(from_error_info(info.death_cause))
        taken = self._after_taken
        if taken is None:
            return self._connect(info)
        incarnation = self._incarnation
        if not taken:
            return self._ask(max(incarnation, info.incarnation), None, after_taken=None)
        if info.incarnation > incarnation:
            fail, ring = self._settle_inflight(
                f"the {self.class_name} actor's process died while running this call "
                f"(incarnation {incarnation}); the actor was restarted",
                _DIED,
            )
            step = self._ask(info.incarnation, None, after_taken=None)
        else:
            fail, ring = self._settle_inflight(
                f"the connection to the {self.class_name} actor broke while running this call{self._broken_by}",
                _UNAVAILABLE,
            )
            step = self._ask(incarnation, None, after_taken=None)
        step.fail = fail
        step.ring = ring
        return step

    def _connect(self, info: common_pb2.ActorInfo) -> Step:
        if self.closed:
            return Step(None)
        self._incarnation = info.incarnation
        self._broken_by = ""
        self.actor_unready = False
        self.sync_sent = self.accepted_seq = 0  # acknowledgements are per stream
        return Step(Connect(info.address, info.incarnation))

    def _die(self, cause: RemoteError) -> Step:
        if not cause.message:
            cause = system_error(f"the {self.class_name} actor {self.actor_id} is dead", _DIED)
        self.dead = cause
        return Step(None, [(oid, None, cause) for c in self._take_all() for oid in c.object_ids])

    def _settle_inflight(self, message: str, kind: ErrorKind) -> tuple[list[Completion], bool]:
        """Retry the calls that were in flight where max_task_retries allows; fail the rest."""
        failed: list[PendingCall] = []
        retry: list[PendingCall] = []
        calls, cancelled = self._without_cancelled(sorted(self.inflight.values(), key=_by_seq))
        for call in calls:
            if call.retries_left != 0:
                if call.retries_left > 0:
                    call.retries_left -= 1
                retry.append(call)
            else:
                failed.append(call)
        self.inflight.clear()
        return self._fail(failed, message, kind) + cancelled, self._put_back(retry)

    def _put_back(self, calls: list[PendingCall]) -> bool:
        """Ahead of the unsent ones, in caller order, so this caller's order holds on the next
        stream; True when the queue is not empty (the stream's writer must be woken)."""
        self.inflight.clear()
        self.unsent.extendleft(reversed(calls))
        return bool(self.unsent)

    def _take_all(self) -> list[PendingCall]:
        """Every call in flight then every unsent one, in caller order."""
        calls = sorted(self.inflight.values(), key=_by_seq) + list(self.unsent)
        self.inflight.clear()
        self.unsent.clear()
        return calls

    def _fail(self, calls: list[PendingCall], message: str, kind: ErrorKind) -> list[Completion]:
        completions: list[Completion] = []
        for call in calls:
            info = system_error(f"{self.class_name}.{call.method}: {message}", kind)
            completions.extend((oid, None, info) for oid in call.object_ids)
        return completions


def _by_seq(call: PendingCall) -> int:
    return call.seq
