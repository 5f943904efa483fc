"""Ray's id objects: `JobID`, `TaskID`, `ActorID` and `NodeID` (`actorhub.JobID`, ...).

actorhub's ids are hex strings everywhere (runtime/ids.py); these wrap one where Ray's API
hands out an object, such as `ObjectRef.task_id()`, or for programs that build one from the
strings `get_runtime_context()` returns (`JobID.from_hex(ctx.get_job_id())`). An id equals
only an id of the same kind with the same hex, as in Ray.
"""

from __future__ import annotations

from typing import Any, Self


class BaseID:
    __slots__ = ("_hex",)

    def __init__(self, id_hex: str) -> None:
        if not isinstance(id_hex, str):
            raise TypeError(f"{type(self).__name__} takes a hex str, not {type(id_hex).__name__}")
        self._hex = id_hex

    def hex(self) -> str:
        return self._hex

    def binary(self) -> bytes:
        """The id as bytes (ids are ASCII); `from_binary` takes it back."""
        return self._hex.encode()

    @classmethod
    def from_hex(cls, id_hex: str) -> Self:
        return cls(id_hex)

    @classmethod
    def from_binary(cls, binary: bytes) -> Self:
        if not isinstance(binary, bytes | bytearray):
            raise TypeError(f"{cls.__name__}.from_binary() takes bytes, not {type(binary).__name__}")
        return cls(bytes(binary).decode())

    @classmethod
    def nil(cls) -> Self:
        return cls("")

    def is_nil(self) -> bool:
        return not self._hex

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, BaseID) and other._hex == self._hex

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._hex))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._hex})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._hex,))


class JobID(BaseID):
    __slots__ = ()


class TaskID(BaseID):
    """A task's or actor call's id: its results' ids without their index."""

    __slots__ = ()


class ActorID(BaseID):
    __slots__ = ()


class NodeID(BaseID):
    __slots__ = ()
