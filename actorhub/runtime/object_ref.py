"""ObjectRef: a future for a value that a call produced or `put` stored.

A ref is owned by the process that created it. Pickling a ref sends its id and its owner's
address, so any process can read the value from the owner.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Generic, Protocol, TypeVar

from actorhub.exceptions import NoRuntimeError
from actorhub.runtime import current as _current
from actorhub.runtime.id_types import JobID, TaskID
from actorhub.runtime.ids import job_of

T = TypeVar("T")


class RefCounts(Protocol):
    """What a ref needs of its process's object table (runtime/object_table.py), which imports
    this module: a Protocol keeps the two out of each other's imports."""

    def add_local_ref(self, object_id: str) -> None: ...

    def drop_local_ref(self, object_id: str) -> None: ...

    def mark_escaped(self, object_id: str) -> None: ...


# While set, refs being pickled are collected here: the code that pickles knows where the
# bytes go and keeps the refs alive until the receiver has told the owner it holds them.
_captured: ContextVar[list[ObjectRef[Any]] | None] = ContextVar("actorhub_captured_refs", default=None)
# The borrowed ids first seen while unpickling a call's arguments, for the call running in this
# context. The caller keeps those refs alive during the call, so the callee registers only the
# ones it still holds when the call ends (most calls hold none by then: no message to owners).
_call_adopted: ContextVar[list[str] | None] = ContextVar("actorhub_call_adopted", default=None)
_unpickling_arguments: ContextVar[bool] = ContextVar("actorhub_unpickling_arguments", default=False)


@contextmanager
def capturing_refs() -> Iterator[list[ObjectRef[Any]]]:
    """Collect the refs pickled inside the block (they do not count as escaped)."""
    refs: list[ObjectRef[Any]] = []
    token = _captured.set(refs)
    try:
        yield refs
    finally:
        _captured.reset(token)


def begin_call() -> tuple[list[str], Token[list[str] | None]]:
    """On the callee, as one call starts: the list its argument refs are deferred to.

    Plain set/reset rather than a context manager: this is on every call's path.
    """
    ids: list[str] = []
    return ids, _call_adopted.set(ids)


def end_call(token: Token[list[str] | None]) -> None:
    _call_adopted.reset(token)


def begin_unpickling_arguments() -> Token[bool]:
    return _unpickling_arguments.set(True)


def end_unpickling_arguments(token: Token[bool]) -> None:
    _unpickling_arguments.reset(token)


def adoption_context() -> list[str] | None:
    """The call's list to defer registrations to, when unpickling a call's arguments."""
    return _call_adopted.get() if _unpickling_arguments.get() else None


class ObjectRef(Generic[T]):
    __slots__ = ("__weakref__", "_id", "_owner", "_table")

    def __init__(self, object_id: str, owner_address: str, table: RefCounts | None) -> None:
        self._id = object_id
        self._owner = owner_address
        # The table of the process holding this ref; counts live refs so values can be freed.
        self._table = table
        if table is not None:
            table.add_local_ref(object_id)

    def hex(self) -> str:
        return self._id

    def binary(self) -> bytes:
        """The id as bytes (ids are ASCII); `ObjectRef.from_binary` takes it back."""
        return self._id.encode()

    def task_id(self) -> TaskID:
        """The id of the call, task or put that made this object, as Ray's TaskID: the object's
        id without its result index ("<caller>.t<seq>" for a task's results; a put is its own).
        Its hex is what `get_runtime_context().get_task_id()` says inside that task or call."""
        head, dot, index = self._id.rpartition(".")
        # Ids are "<caller>.<call>" or "<caller>.<call>.<index>": only the second has an index.
        return TaskID(head if dot and head.count(".") >= 1 and index.isdigit() else self._id)

    def job_id(self) -> JobID:
        """The job the object was made for: the driver's, or, for code in a task or actor, the
        job of that task or of the actor's owner (read from the id, which carries it)."""
        return JobID(job_of(self._id))

    def is_nil(self) -> bool:
        return not self._id

    @classmethod
    def nil(cls) -> ObjectRef[Any]:
        """The ref to no object (Ray's nil id): usable as a placeholder, never readable."""
        return cls("", "", None)

    @classmethod
    def from_hex(cls, object_id: str) -> ObjectRef[Any]:
        """A ref from an id alone. It names no owner: it compares equal to the real ref, but
        reading it works only in the process that owns the object."""
        if not isinstance(object_id, str):
            raise TypeError(f"ObjectRef.from_hex() takes a str, not {type(object_id).__name__}")
        return cls(object_id, "", None)

    @classmethod
    def from_binary(cls, binary: bytes) -> ObjectRef[Any]:
        if not isinstance(binary, bytes | bytearray):
            raise TypeError(f"ObjectRef.from_binary() takes bytes, not {type(binary).__name__}")
        return cls.from_hex(bytes(binary).decode())

    @property
    def owner_address(self) -> str:
        return self._owner

    def __repr__(self) -> str:
        return f"ObjectRef({self._id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __del__(self) -> None:
        table = self._table
        if table is not None:
            # Only a lock-free append here: __del__ may run inside a locked section of the table.
            table.drop_local_ref(self._id)

    @classmethod
    def counted(cls, object_id: str, owner_address: str, table: RefCounts) -> ObjectRef[Any]:
        """A ref whose count the table has taken already (see ObjectTable.adopt)."""
        ref: ObjectRef[Any] = cls.__new__(cls)
        ref._id = object_id
        ref._owner = owner_address
        ref._table = table
        return ref

    def __reduce__(self) -> tuple[Any, ...]:
        captured = _captured.get()
        if captured is not None:
            captured.append(self)
        elif self._table is not None:
            # Pickled by user code, or to somewhere we cannot follow: never freed while the
            # owner lives (as Ray does for refs serialized out of band).
            self._table.mark_escaped(self._id)
        return (_rebuild_ref, (self._id, self._owner))

    def future(self) -> concurrent.futures.Future[T]:
        """A concurrent.futures.Future that completes with the value (or its error)."""
        runtime = _current.runtime_or_none()
        if runtime is None:
            raise NoRuntimeError(f"{self!r}.future() needs an actorhub runtime in this process: call init() first")
        return runtime.future_of(self)

    def as_future(self) -> asyncio.Future[T]:
        """An asyncio future of the value, on the running (or current) event loop, as Ray's."""
        return asyncio.wrap_future(self.future())

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self.future()).__await__()


def _rebuild_ref(object_id: str, owner_address: str) -> ObjectRef[Any]:
    runtime = _current.runtime_or_none()
    if runtime is None:
        return ObjectRef(object_id, owner_address, None)
    ref: ObjectRef[Any] = runtime.adopt_ref(object_id, owner_address)
    return ref
