"""ObjectRef: a future for a value that a call produced or `put` stored.

A ref is owned by the process that created it. Pickling a ref sends its id and its owner's
address, so any process can read the value from the owner.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from actorhub._object_table import ObjectTable

T = TypeVar("T")


class ObjectRef(Generic[T]):
    __slots__ = ("__weakref__", "_id", "_owner", "_table")

    def __init__(self, object_id: str, owner_address: str, table: ObjectTable | None) -> None:
        self._id = object_id
        self._owner = owner_address
        # The table of the process holding this ref; counts live refs so values can be freed.
        self._table = table
        if table is not None:
            table.add_local_ref(object_id)

    def hex(self) -> str:
        return self._id

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

    def __reduce__(self) -> tuple[Any, ...]:
        if self._table is not None:
            self._table.mark_escaped(self._id)
        return (_rebuild_ref, (self._id, self._owner))

    def future(self) -> concurrent.futures.Future[T]:
        """A concurrent.futures.Future that completes with the value (or its error)."""
        from actorhub._runtime import current

        return current().future_of(self)

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self.future()).__await__()


def _rebuild_ref(object_id: str, owner_address: str) -> ObjectRef[Any]:
    from actorhub._runtime import current_or_none

    runtime = current_or_none()
    if runtime is None:
        return ObjectRef(object_id, owner_address, None)
    return runtime.adopt_ref(object_id, owner_address)
