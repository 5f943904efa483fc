"""The actor's mailbox (serial, threaded or async: `make_mailbox`), and concurrency groups:
methods split into named groups, each with its own limit, as in Ray.

`@remote(concurrency_groups={"io": 2})` names the groups, `@method(concurrency_group="io")` puts
a method in one, and `.options(concurrency_group=...)` picks one for a single call (it travels
in `Call.concurrency_group`, set only then). Methods in no group are in the default group,
limited by `max_concurrency`. Each group has a mailbox of its own (worker/mailbox.py), so a
group whose slots are all busy never holds up another: a health check in its own group answers
while every slot of the default group is taken.
- threaded (and plain) actors: a thread pool per named group; the default group is the actor's
  own thread when `max_concurrency` is 1 (one call at a time, in order, as before), else a pool;
- async actors: an event loop per named group, on a thread of its own, as Ray gives each group
  its own loop; the default group keeps the actor's loop. So a coroutine that blocks its loop
  blocks only its group.
Calls from one caller to one group start in the order they were sent, as in Ray; calls to
different groups do not wait for each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from actorhub._proto.v1 import common_pb2, worker_pb2
from actorhub.exceptions import OptionsError
from actorhub.wire.errors import error_to_proto
from actorhub.worker.async_mailbox import AsyncMailbox
from actorhub.worker.mailbox import (
    DEFAULT_ASYNC_CONCURRENCY,
    ActorInstance,
    ActorThread,
    Mailbox,
    SerialMailbox,
    ThreadedMailbox,
)
from actorhub.worker.reply_stream import ReplyStream


def make_actor_mailbox(actor: ActorInstance, spec: common_pb2.ActorSpec, thread: ActorThread) -> Mailbox:
    """The mailbox of the actor of `spec`: one per concurrency group when it has groups."""
    default = make_mailbox(actor, spec.is_async, spec.max_concurrency, thread)
    if not spec.concurrency_groups:
        return default
    groups: dict[str, Mailbox] = {}
    for name, size in sorted(spec.concurrency_groups.items()):
        groups[name] = AsyncMailbox(actor, size) if spec.is_async else ThreadedMailbox(actor, size, f"actorhub-{name}")
    method_groups = {m.name: m.concurrency_group for m in spec.methods if m.concurrency_group}
    return GroupedMailbox(default, groups, method_groups)


def make_mailbox(actor: ActorInstance, is_async: bool, max_concurrency: int, thread: ActorThread) -> Mailbox:
    """The actor's mailbox; a serial one keeps `thread` (which ran the constructor), others end it."""
    if is_async:
        thread.close()
        return AsyncMailbox(actor, max_concurrency or DEFAULT_ASYNC_CONCURRENCY)
    if max_concurrency > 1:
        thread.close()
        return ThreadedMailbox(actor, max_concurrency)
    return SerialMailbox(actor, thread)


class GroupedMailbox:
    """Routes each call to its group's mailbox: the call's own group, else its method's."""

    def __init__(self, default: Mailbox, groups: dict[str, Mailbox], method_groups: dict[str, str]) -> None:
        self._default = default
        self._groups = groups
        self._method_groups = method_groups

    def submit(self, calls: Sequence[worker_pb2.Call], stream: ReplyStream) -> None:
        by_group: dict[str, list[worker_pb2.Call]] = {}
        method_groups = self._method_groups
        for call in calls:
            group = call.concurrency_group or method_groups.get(call.method, "")
            by_group.setdefault(group, []).append(call)
        for group, grouped in by_group.items():
            mailbox = self._groups.get(group) if group else self._default
            if mailbox is not None:
                mailbox.submit(grouped, stream)
                continue
            # Callers check the name at .options(); this is a caller that did not.
            for call in grouped:
                error = OptionsError(
                    f"invalid options for {call.method}: concurrency_group={group!r}: the actor defines "
                    f"no such concurrency group (defined: {sorted(self._groups)})"
                )
                stream.post(worker_pb2.Reply(seq=call.seq, error=error_to_proto(error)))

    def finish(self, last: Callable[[], None], timeout: float) -> None:
        for mailbox in self._groups.values():
            mailbox.finish(_nothing, timeout)
        self._default.finish(last, timeout)

    def interrupt(self, stream: ReplyStream, seqs: Sequence[int]) -> None:
        for mailbox in (self._default, *self._groups.values()):
            mailbox.interrupt(stream, seqs)

    def close(self) -> None:
        for mailbox in (*self._groups.values(), self._default):
            mailbox.close()


def _nothing() -> None:
    pass
