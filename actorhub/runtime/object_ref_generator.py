"""What a streaming call returns: `ObjectRefGenerator`, and `DynamicObjectRefGenerator`, the
value of the one ref a `num_returns="dynamic"` call returns.

An `ObjectRefGenerator` reads the call's `ItemStream` (runtime/item_stream.py): `next()` gives
each item's ref as soon as the item is in this process, in the order yielded. Its end is the
call's own result (`completed()`): once every item is taken, a call that failed as a whole (its
worker died, the method was not a generator) hands out that result as one more ref, whose
`get` raises the failure, and then stops; a call whose generator raised has that error in its
last item instead, as in Ray. It is a local view of one call: it does not pickle.

A "dynamic" call streams the same way, but its caller gets one ref, completed when the call
ends with a `DynamicObjectRefGenerator` of the items' refs (Ray's deprecated form; the items
are kept alive by that value, as any refs inside a value).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, NoReturn

from actorhub.runtime import serialization as _serialization
from actorhub.runtime.item_stream import ItemStream
from actorhub.runtime.object_ref import ObjectRef, capturing_refs
from actorhub.runtime.object_table import ErrorOrigin, ObjectTable

StreamingMode = Literal["streaming", "dynamic"]
STREAMING_MODES: tuple[str, ...] = ("streaming", "dynamic")
_WAIT_POLL_S = 0.005


class ObjectRefGenerator:
    """The refs of a streaming call's items: `next(gen)`, `for ref in gen`, `async for`.

    Not thread-safe (as Ray's): one reader at a time.
    """

    def __init__(self, stream: ItemStream, completion: ObjectRef[Any], objects: ObjectTable) -> None:
        self._stream = stream
        self._completion = completion
        self._objects = objects
        self._end_taken = False
        self._last = ""  # the id of the last ref handed out
        objects.add_callback(completion.hex(), stream.end)

    # -- iteration ----------------------------------------------------------------------------
    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef[Any]:
        """The next item's ref, once the item is here; StopIteration after the last one."""
        ref = self._stream.take()
        if ref is not None:
            self._last = ref.hex()
            return ref
        return self._after_last(StopIteration)

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef[Any]:
        """As `next`, without blocking the event loop; StopAsyncIteration after the last one."""
        ref = await self._stream.take_async()
        if ref is not None:
            self._last = ref.hex()
            return ref
        return self._after_last(StopAsyncIteration)

    def _after_last(self, stop: type[Exception]) -> ObjectRef[Any]:
        # A call that failed as a whole gives its failure as one last ref, once.
        if self._end_taken or not self._failed():
            self._end_taken = True
            raise stop
        self._end_taken = True
        return self._completion

    def _failed(self) -> bool:
        """The call failed as a whole, and the last item handed out did not say so already (a
        cancelled task's generator raised the cancellation as its last item)."""
        return self._is_error(self._completion.hex()) and not (self._last and self._is_error(self._last))

    def _is_error(self, object_id: str) -> bool:
        try:
            _, error, _ = self._objects.read(object_id)
        except KeyError:  # not over yet, or freed
            return False
        return error is not None

    # -- state --------------------------------------------------------------------------------
    def completed(self) -> ObjectRef[None]:
        """A ref that is ready once the call has ended; its `get` raises when the call failed as
        a whole (not for an error of the generator, which is its last item)."""
        return self._completion

    def next_ready(self) -> bool:
        """`next()` would return at once with a ref (not StopIteration)."""
        if self._stream.ready():
            return True
        return self._stream.ended() and not self._end_taken and self._failed()

    def is_finished(self) -> bool:
        """Every ref was taken: `next()` raises StopIteration."""
        return self._stream.ended() and not self._stream.ready() and (self._end_taken or not self._failed())

    # -- what a Python generator has and this one does not (as in Ray) -----------------------
    def send(self, value: Any) -> NoReturn:
        raise NotImplementedError("ObjectRefGenerator.send is not supported")

    def throw(self, *args: Any) -> NoReturn:
        raise NotImplementedError("ObjectRefGenerator.throw is not supported")

    def close(self) -> NoReturn:
        raise NotImplementedError("ObjectRefGenerator.close is not supported")

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "an ObjectRefGenerator cannot be pickled: it reads one call's results in the process "
            "that made the call; pass the refs it gives (or their values) instead"
        )

    def __del__(self) -> None:
        # Items not taken yet (and those still to come) are freed.
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._completion.hex()})"


class DynamicObjectRefGenerator:
    """The value of a `num_returns="dynamic"` call's ref: its items' refs, in order; iterating
    takes them (as in Ray)."""

    def __init__(self, refs: list[ObjectRef[Any]]) -> None:
        self._refs: collections.deque[ObjectRef[Any]] = collections.deque(refs)

    def __iter__(self) -> Iterator[ObjectRef[Any]]:
        while self._refs:
            yield self._refs.popleft()

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def wait_with_generators(
    refs_or_generators: Sequence[ObjectRef[Any] | ObjectRefGenerator], num_returns: int, timeout: float | None,
    objects: ObjectTable, start_fetch: Callable[[ObjectRef[Any]], None],
) -> tuple[list[Any], list[Any]]:
    """wait() over refs and generators, as Ray's: a generator is ready when `next()` would not
    block (an item is there, or it is finished). Returns the first `num_returns` ready ones in
    the caller's order, and the rest.

    It checks every few milliseconds: generators have no completion callback to wait on.
    """
    for item in refs_or_generators:
        if isinstance(item, ObjectRef):
            start_fetch(item)  # a borrowed one must be on its way
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        flags = [
            (item.next_ready() or item.is_finished()) if isinstance(item, ObjectRefGenerator)
            else objects.is_ready(item.hex())
            for item in refs_or_generators
        ]
        if flags.count(True) >= num_returns or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(_WAIT_POLL_S)
    ready: list[Any] = []
    not_ready: list[Any] = []
    for item, flag in zip(refs_or_generators, flags, strict=True):
        (ready if flag and len(ready) < num_returns else not_ready).append(item)
    return ready, not_ready


def streaming_result(
    mode: str, stream: ItemStream, completion: ObjectRef[Any], objects: ObjectTable, owner_address: str
) -> ObjectRefGenerator | ObjectRef[Any]:
    """What `.remote()` of a streaming call returns: the generator, or for "dynamic" one ref."""
    if mode == "streaming":
        return ObjectRefGenerator(stream, completion, objects)
    result_id = f"{completion.hex()}.dynamic"
    objects.create_pending([result_id], ErrorOrigin())
    result: ObjectRef[Any] = ObjectRef(result_id, owner_address, objects)

    def finish(completion: ObjectRef[Any] = completion) -> None:
        # On the thread that completed the call; the completion ref goes with this closure.
        stream.end()
        _, error, origin = objects.read(completion.hex())
        if error is not None:
            if origin is not None:
                objects.set_origin([result_id], origin)
            objects.complete_many([(result_id, None, error)])
            stream.close()
            return
        refs: list[ObjectRef[Any]] = []
        while (ref := stream.take(0)) is not None:
            refs.append(ref)
        with capturing_refs() as contained:
            data = _serialization.dumps(DynamicObjectRefGenerator(refs))
        del refs
        # The value holds the items' refs: they live as long as it does.
        objects.attach_contained(result_id, contained)
        objects.complete_many([(result_id, data, None)])

    objects.add_callback(completion.hex(), finish)
    return result
