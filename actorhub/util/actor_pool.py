"""ActorPool: spread work over a fixed set of actors, one piece of work per actor at a time.

Ray's `ray.util.ActorPool`, with its semantics: `submit` runs `fn(actor, value)` on an idle
actor or queues it until one is free; `get_next` returns results in submission order,
`get_next_unordered` in completion order, and each result read frees its actor for the next
queued submission. Mixing the two getters is allowed only one way: once `get_next_unordered`
has read a later result, `get_next` refuses (the order it promises is gone).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from actorhub.api.cluster import get, wait
from actorhub.runtime.object_ref import ObjectRef

V = TypeVar("V")
A = TypeVar("A")

Work = Callable[[Any, V], Any]  # fn(actor, value) -> an ObjectRef (or a list of them)

_TIMED_OUT = "Timed out waiting for result"


@dataclass
class _InFlight:
    index: int
    actor: Any
    result: Any  # what fn returned: an ObjectRef, or a list of ObjectRefs


def _refs_of(result: Any) -> list[ObjectRef[Any]]:
    return list(result) if isinstance(result, list | tuple) else [result]


class ActorPool(Generic[V]):
    """A pool over `actors`; an actor belongs to at most one pool at a time (push checks)."""

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle: list[Any] = list(actors)
        self._in_flight: dict[int, _InFlight] = {}  # by submission index
        self._queued: deque[tuple[Work[V], V]] = deque()  # submitted while no actor was idle
        self._submitted = 0  # the next submission's index
        self._next_ordered = 0  # the index get_next returns next

    # -- submitting ------------------------------------------------------------------------
    def submit(self, fn: Work[V], value: V) -> None:
        """Run `fn(actor, value)` on an idle actor now, or once one is free (in submission order)."""
        if not self._idle:
            self._queued.append((fn, value))
            return
        actor = self._idle.pop()
        result = fn(actor, value)
        self._in_flight[self._submitted] = _InFlight(self._submitted, actor, result)
        self._submitted += 1

    def map(self, fn: Work[V], values: Iterable[V]) -> Iterator[Any]:
        """Results of `fn(actor, v)` for every v, in the order of `values`, as they are read.

        Results of earlier submissions not read yet are dropped first, as in Ray."""
        self._drop_unread()
        for value in values:
            self.submit(fn, value)
        return self._drain(self.get_next)

    def map_unordered(self, fn: Work[V], values: Iterable[V]) -> Iterator[Any]:
        """Results of `fn(actor, v)` for every v, in the order they complete."""
        self._drop_unread()
        for value in values:
            self.submit(fn, value)
        return self._drain(self.get_next_unordered)

    def _drain(self, read: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield read()

    def _drop_unread(self) -> None:
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    # -- reading ---------------------------------------------------------------------------
    def has_next(self) -> bool:
        """Whether a submitted piece of work has a result not read yet."""
        return bool(self._in_flight)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order. With a timeout that passes: TimeoutError, and with
        `ignore_if_timedout=True` that result is skipped for good (its actor is freed)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_ordered >= self._submitted:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        entry = self._in_flight[self._next_ordered]
        timed_out = False
        if timeout is not None:
            refs = _refs_of(entry.result)
            ready, _ = wait(refs, num_returns=len(refs), timeout=timeout)
            if len(ready) < len(refs):
                if not ignore_if_timedout:
                    raise TimeoutError(_TIMED_OUT)
                timed_out = True
        del self._in_flight[entry.index]
        self._next_ordered += 1
        self._return_actor(entry.actor)
        if timed_out:
            raise TimeoutError(f"{_TIMED_OUT}. The task {entry.result!r} has been ignored.")
        return get(entry.result)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of whichever submission finishes first. A timeout that passes raises
        TimeoutError and skips nothing (`ignore_if_timedout` only changes the message, as in Ray)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        first: dict[ObjectRef[Any], _InFlight] = {}
        for entry in self._in_flight.values():
            # A list result counts as done when its first ref is: as Ray's pool, which waits on one ref.
            first.setdefault(_refs_of(entry.result)[0], entry)
        ready, _ = wait(list(first), num_returns=1, timeout=timeout)
        if not ready:
            suffix = ". No task has been ignored." if ignore_if_timedout else ""
            raise TimeoutError(_TIMED_OUT + suffix)
        entry = first[ready[0]]
        del self._in_flight[entry.index]
        self._next_ordered = max(self._next_ordered, entry.index + 1)
        self._return_actor(entry.actor)
        return get(entry.result)

    # -- actors ----------------------------------------------------------------------------
    def _return_actor(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._queued:
            self.submit(*self._queued.popleft())

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission waits for one."""
        return bool(self._idle) and not self._queued

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool (None if none is free)."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool; it takes the oldest queued submission at once."""
        busy = [entry.actor for entry in self._in_flight.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
