"""`inspect_serializability`: which part of a value keeps it from being serialized.

A value that fails to serialize is taken apart (a function into the globals and closure
variables it uses, an object into its attributes, a container into its items) to the depth
asked for; the parts that fail without any failing part of their own are the culprits.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Iterator
from typing import Any, TextIO

from actorhub.runtime import serialization as _serialization


class FailureTuple:
    """A value that cannot be serialized, its name, and the value it was found in (None at the top)."""

    __slots__ = ("name", "obj", "parent")

    def __init__(self, obj: Any, name: str, parent: Any) -> None:
        self.obj = obj
        self.name = name
        self.parent = parent

    def __repr__(self) -> str:
        return f"FailureTuple(name={self.name!r}, obj={_short(self.obj)}, parent={_short(self.parent)})"


def inspect_serializability(
    base_obj: Any, name: str | None = None, depth: int = 3, print_file: TextIO | None = None
) -> tuple[bool, set[FailureTuple]]:
    """Whether `base_obj` serializes; if not, print the parts that fail and return them."""
    if depth < 0:
        raise ValueError(f"depth must be 0 or more, not {depth}")
    out = print_file or sys.stdout
    failures: set[FailureTuple] = set()
    label = name or getattr(base_obj, "__qualname__", None) or type(base_obj).__name__
    serializable = _inspect(base_obj, label, None, depth, failures, out, 0)
    if serializable:
        print(f"{label} is serializable.", file=out)
    return serializable, failures


def _inspect(
    obj: Any, name: str, parent: Any, depth: int, failures: set[FailureTuple], out: TextIO, level: int
) -> bool:
    error = _error_of(obj)
    if error is None:
        return True
    print(f"{'    ' * level}{name} ({type(obj).__name__}) cannot be serialized: {error}", file=out)
    culprit_below = False
    if depth > 0:
        for child_name, child in _parts(obj):
            if _error_of(child) is not None:
                culprit_below = True
                _inspect(child, child_name, obj, depth - 1, failures, out, level + 1)
    if not culprit_below:
        failures.add(FailureTuple(obj, name, parent))
    return False


def _error_of(obj: Any) -> str | None:
    try:
        _serialization.dumps(obj)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _parts(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, types.FunctionType):
        # What the function would carry with it: the globals it names and its closure.
        found = inspect.getclosurevars(obj)
        for kind, variables in (("global", found.globals), ("closure variable", found.nonlocals)):
            for var, value in variables.items():
                if not isinstance(value, types.ModuleType):
                    yield f"{kind} {var!r} of {obj.__qualname__}", value
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield f"[{key!r}]", value
    elif isinstance(obj, list | tuple | set | frozenset):
        for index, value in enumerate(obj):
            yield f"[{index}]", value
    elif hasattr(obj, "__dict__") and not isinstance(obj, type | types.ModuleType):
        for attribute, value in vars(obj).items():
            yield f"{type(obj).__name__}.{attribute}", value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
