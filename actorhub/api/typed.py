"""Typed actor interfaces: `@remote(typed=True)` checks calls against the methods' type hints.

The caller validates each call's arguments before anything is sent, as pydantic's
`validate_call` does in strict mode (no coercion: "1" is not an int, a dict is not a model), and raises
`ArgumentValidationError`, a TypeError carrying pydantic's field-level message. The actor
validates what each method returns the same way (`ReturnValidationError`), so a caller gets
what the hints promise.

Validators are built from the class where it is at hand (the creator, and the worker). A handle
made elsewhere (`get_actor`, one unpickled in another process) rebuilds them from the method's
parameters and hints, which travel pickled in the actor's method table (`MethodMeta.typed`).

A top-level ObjectRef argument stands for its value, as in Ray, which the caller does not have:
such an argument is not checked (the others of the call are).
"""

from __future__ import annotations

import inspect
import logging
import typing
import weakref
from typing import Any

import cloudpickle
import pydantic

from actorhub.exceptions import ArgumentValidationError, ReturnValidationError
from actorhub.runtime.object_ref import ObjectRef

log = logging.getLogger(__name__)

_STRICT = pydantic.ConfigDict(strict=True, arbitrary_types_allowed=True)
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD


class TypedMethod:
    """One method's validators: called with a call's (args, kwargs), as an arg check is."""

    __slots__ = ("_adapters", "_kinds", "_name", "_return", "_signature", "blob")

    def __init__(self, name: str, signature: inspect.Signature, hints: dict[str, Any]) -> None:
        self._name = name
        self._signature = signature.replace(return_annotation=inspect.Signature.empty)
        self._kinds = {p.name: p.kind for p in signature.parameters.values()}
        self._adapters = {
            p.name: _adapter(hints[p.name]) for p in signature.parameters.values() if p.name in hints
        }
        self._return = _adapter(hints["return"]) if "return" in hints else None
        self.blob = _pack(signature, hints)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ArgumentValidationError(f"{self._name}.remote(): {e}") from None
        refused = []
        for name, value in bound.arguments.items():
            adapter = self._adapters.get(name)
            if adapter is None:
                continue
            kind = self._kinds[name]
            values = value if kind == _VAR_POSITIONAL else value.values() if kind == _VAR_KEYWORD else (value,)
            for one in values:
                if type(one) is ObjectRef:
                    continue
                try:
                    # strict=True at the call: models and dataclasses inside are strict too.
                    adapter.validate_python(one, strict=True)
                except pydantic.ValidationError as e:
                    refused.append(f"argument {name!r}: {e}")
        if refused:
            raise ArgumentValidationError(f"{self._name}.remote(): " + "\n".join(refused))

    def check_return(self, value: Any) -> None:
        if self._return is None:
            return
        try:
            self._return.validate_python(value, strict=True)
        except pydantic.ValidationError as e:
            raise ReturnValidationError(f"{self._name} returned a value its type hint refuses: {e}") from None


def _adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    try:
        return pydantic.TypeAdapter(hint, config=_STRICT)
    except pydantic.PydanticUserError:  # a model or dataclass: its own config rules
        return pydantic.TypeAdapter(hint)


def _pack(signature: inspect.Signature, hints: dict[str, Any]) -> bytes:
    """The method's parameters and hints for handles made where the class is not (b"" when
    they cannot be pickled: those handles then check only that the arguments bind)."""
    try:
        return bytes(cloudpickle.dumps((signature, hints)))
    except Exception as e:
        log.debug("the type hints of a typed method cannot travel: %r", e)
        return b""


def unpack(name: str, blob: bytes) -> TypedMethod | None:
    """The validators of a method from its MethodMeta.typed (None for none)."""
    if not blob:
        return None
    try:
        signature, hints = cloudpickle.loads(blob)
    except Exception as e:  # a hint's type not importable here: check only that arguments bind
        log.warning("cannot check the types of %s's arguments in this process: %r", name, e)
        return None
    return TypedMethod(name, signature, hints)


_class_methods: weakref.WeakKeyDictionary[type, dict[str, TypedMethod]] = weakref.WeakKeyDictionary()


def for_class(cls: type) -> dict[str, TypedMethod]:
    """The validators of `cls`'s public methods (and its constructor, under "__init__"), by name."""
    methods = _class_methods.get(cls)
    if methods is not None:
        return methods
    methods = {}
    for name in ["__init__", *dir(cls)]:
        if name.startswith("_") and name != "__init__":
            continue
        attr = inspect.getattr_static(cls, name, None)
        func = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
        if not inspect.isfunction(func) or inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            continue  # a generator's items stream: nothing single to validate
        try:
            signature = inspect.signature(func)
            hints = typing.get_type_hints(func, include_extras=True)
        except (TypeError, ValueError, NameError) as e:
            raise TypeError(f"typed actor {cls.__name__}: the type hints of {name} cannot be read: {e}") from None
        params = list(signature.parameters.values())
        if not isinstance(attr, staticmethod) and params:
            params = params[1:]  # self (or cls) is not the caller's
        what = f"{cls.__name__}.{name}" if name != "__init__" else cls.__name__
        methods[name] = TypedMethod(what, signature.replace(parameters=params), hints)
    _class_methods[cls] = methods
    return methods
