"""Serialization of arguments and results: cloudpickle, with refs and handles by reference.

A value that does not serialize fails at the caller, with an error that names which argument
it was and why, before anything is sent.
"""

from __future__ import annotations

import io
import pickle
import sys
import sysconfig
import types
from collections import ChainMap
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from actorhub.exceptions import SerializationError

_EMPTY_ARGS = b""
PROTOCOL = 5


_INSTALLED_ROOTS = tuple(
    {Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib") if (p := sysconfig.get_path(key))}
)


def _is_installed(module: ModuleType) -> bool:
    if module.__name__.split(".")[0] == "actorhub":
        return True
    file = getattr(module, "__file__", None)
    if file is None:
        return True  # built in
    path = Path(file).resolve()
    return any(path.is_relative_to(root) for root in _INSTALLED_ROOTS)


def ship_module_of(obj: Any) -> None:
    """Pickle the code of `obj`'s module by value when workers may not be able to import it.

    A class defined in the user's script directory or a test file is importable in the driver
    only; workers run elsewhere (another cwd, another machine), so its code travels with it.
    """
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or _is_installed(module):
        return
    try:
        cloudpickle.register_pickle_by_value(module)
    except ValueError:
        pass  # already registered, or not a module cloudpickle can ship


# Values of these types pickle the same with the C pickler, at a tenth of cloudpickle's cost.
_PLAIN = frozenset({bytes, str, int, float, bool, type(None)})
PLAIN_TYPES = _PLAIN


_DYNAMIC_FILENAME = "<dynamic-code>"


def _reduce_code_keeping_filename(code: types.CodeType) -> Any:
    # cloudpickle (3.1.3 on) replaces the file name of code it ships by value with a placeholder,
    # so a remote traceback could no longer show the user's source lines: put it back. The
    # placeholder is the only plain string argument with that value (co_name and co_qualname
    # follow it; the other strings sit inside tuples).
    constructor, args = cloudpickle.cloudpickle._code_reduce(code)
    args = tuple(code.co_filename if a == _DYNAMIC_FILENAME else a for a in args)
    return constructor, args


# Reducers by exact type, consulted before cloudpickle's: the code fix above, and the classes
# given to register_serializer.
_REDUCERS: dict[type, Callable[[Any], Any]] = {types.CodeType: _reduce_code_keeping_filename}


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = ChainMap(_REDUCERS, cloudpickle.Pickler.dispatch_table)


def _reduce_with(serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any], value: Any) -> Any:
    # The deserializer travels with the value (by value when it is the user's own code), so
    # a receiving process needs no registration of its own.
    return deserializer, (serializer(value),)


def register_serializer(
    cls: type, *, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]
) -> None:
    """Serialize instances of `cls` (exactly that class) as `deserializer(serializer(obj))`."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer takes a class, not {cls!r}")
    if cls in _PLAIN or cls is types.CodeType:
        raise ValueError(f"the serialization of {cls.__qualname__} cannot be replaced")
    for role, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if not callable(fn):
            raise TypeError(f"the {role} for {cls.__qualname__} must be callable, not {fn!r}")
    _REDUCERS[cls] = partial(_reduce_with, serializer, deserializer)


def deregister_serializer(cls: type) -> None:
    """Serialize `cls` as before register_serializer; a class never registered is an error."""
    if cls is types.CodeType or _REDUCERS.pop(cls, None) is None:
        raise ValueError(f"no serializer is registered for {getattr(cls, '__qualname__', cls)!r}")


def dumps(value: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None) -> bytes:
    if buffer_callback is None and type(value) in _PLAIN:
        return pickle.dumps(value, protocol=PROTOCOL)
    with io.BytesIO() as file:
        _Pickler(file, protocol=PROTOCOL, buffer_callback=buffer_callback).dump(value)
        return file.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


# Arguments this large go through the node's object store, not inside the call message.
LARGE_ARGUMENT_BYTES = 100 * 1024


def is_large(value: Any) -> bool:
    kind = type(value)
    if kind in _PLAIN:
        # Long strings and bytes too: inline, they would make every message that carries them
        # large (and could pass the message limit), where the store maps them.
        return (kind is str or kind is bytes) and len(value) >= LARGE_ARGUMENT_BYTES
    size = getattr(value, "nbytes", 0)  # numpy arrays and other buffer owners say their size
    return isinstance(size, int) and size >= LARGE_ARGUMENT_BYTES


def has_large_arguments(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    return any(is_large(a) for a in args) or (bool(kwargs) and any(is_large(v) for v in kwargs.values()))


def dumps_args(args: Sequence[Any], kwargs: dict[str, Any], where: str) -> bytes:
    """Serialize a call's (args, kwargs); `where` names the call in error messages."""
    if not args and not kwargs:
        return _EMPTY_ARGS
    if not kwargs and all(type(a) in _PLAIN for a in args):
        return pickle.dumps((tuple(args), kwargs), protocol=PROTOCOL)
    try:
        return dumps((tuple(args), kwargs))
    except Exception as e:
        raise _name_the_culprit(args, kwargs, where, e) from e


def loads_args(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not data:
        return (), {}
    args, kwargs = loads(data)
    return args, kwargs


def dumps_result(value: Any, where: str) -> bytes:
    try:
        return dumps(value)
    except Exception as e:
        raise SerializationError(
            f"the return value of {where} ({_describe(value)}) cannot be serialized: {e}"
        ) from e


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def _name_the_culprit(
    args: Sequence[Any], kwargs: dict[str, Any], where: str, error: Exception
) -> SerializationError:
    for index, arg in enumerate(args):
        try:
            dumps(arg)
        except Exception as e:
            return SerializationError(
                f"argument {index} of {where} ({_describe(arg)}) cannot be serialized: {e}"
            )
    for key, arg in kwargs.items():
        try:
            dumps(arg)
        except Exception as e:
            return SerializationError(
                f"keyword argument {key!r} of {where} ({_describe(arg)}) cannot be serialized: {e}"
            )
    return SerializationError(f"the arguments of {where} cannot be serialized: {error}")
