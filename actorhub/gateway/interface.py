"""A typed actor's methods as the gateway exposes them: JSON in, Python values to the actor, JSON out.

What a method takes and returns comes from its parameters and type hints, which travel pickled
in the actor's method table (`MethodInfo.typed`, api/typed.py); the gateway has no class.

Arguments arrive as JSON and are validated against the hints in pydantic's JSON mode with the
typed actor's strictness: a JSON object becomes the model a parameter names, an ISO string a
datetime, a list a tuple, but "3" is not an int, as it is not for a Python caller. The actor is
then called with those Python values (and the handle checks them once more, as any caller's).
A return value goes back as JSON through its return hint's serializer (a model: its JSON).

Exposed: the public methods of a typed actor that return one value (not generators, not
`num_returns` other than 1) and whose hints this process can unpickle.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle
import pydantic
import pydantic_core

from actorhub.exceptions import ArgumentValidationError
from actorhub.wire.records import MethodInfo

log = logging.getLogger(__name__)

_STRICT = pydantic.ConfigDict(strict=True, arbitrary_types_allowed=True)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class ResultNotSerializableError(TypeError):
    """The method's return value has no JSON form (its hint's serializer, or pydantic's, refused it)."""


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: inspect._ParameterKind
    required: bool
    adapter: pydantic.TypeAdapter[Any] | None
    """None: the parameter has no type hint; its JSON value is passed as it is."""
    default: Any = inspect.Parameter.empty


class ExposedMethod:
    """One method of a typed actor, callable with JSON arguments."""

    __slots__ = ("_params", "_returns", "_signature", "name")

    def __init__(self, name: str, signature: inspect.Signature, hints: Mapping[str, Any]) -> None:
        self.name = name
        self._signature = signature.replace(return_annotation=inspect.Signature.empty)
        self._params = {
            p.name: Parameter(p.name, p.kind, p.default is inspect.Parameter.empty,
                              _adapter(hints[p.name]) if p.name in hints else None, p.default)
            for p in signature.parameters.values()
        }
        self._returns = _adapter(hints["return"]) if "return" in hints else None

    @property
    def parameters(self) -> Sequence[Parameter]:
        return tuple(self._params.values())

    @property
    def returns(self) -> pydantic.TypeAdapter[Any] | None:
        return self._returns

    def to_python(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments as the types the hints name; ArgumentValidationError names each
        argument refused, with pydantic's message."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ArgumentValidationError(f"{self.name}: {e}") from None
        refused: list[str] = []
        for name, value in bound.arguments.items():
            param = self._params[name]
            if param.adapter is None:
                continue
            if param.kind == inspect.Parameter.VAR_POSITIONAL:
                bound.arguments[name] = tuple(_convert(param.adapter, name, one, refused) for one in value)
            elif param.kind == inspect.Parameter.VAR_KEYWORD:
                bound.arguments[name] = {k: _convert(param.adapter, name, v, refused) for k, v in value.items()}
            else:
                bound.arguments[name] = _convert(param.adapter, name, value, refused)
        if refused:
            raise ArgumentValidationError(f"{self.name}: " + "\n".join(refused))
        return bound.args, bound.kwargs

    def to_json(self, value: Any) -> Any:
        """The return value as JSON-able data (dicts, lists, str, numbers, bools, None)."""
        try:
            if self._returns is not None:
                return self._returns.dump_python(value, mode="json")
            return pydantic_core.to_jsonable_python(value)
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as e:
            raise ResultNotSerializableError(f"{self.name} returned a value with no JSON form: {e}") from None


def _convert(adapter: pydantic.TypeAdapter[Any], name: str, value: Any, refused: list[str]) -> Any:
    # Through JSON text: pydantic's JSON mode is the one that turns JSON forms into the types
    # (an object into a model, a string into a datetime) while staying strict about the rest.
    try:
        return adapter.validate_json(pydantic_core.to_json(value), strict=True)
    except pydantic.ValidationError as e:
        refused.append(f"argument {name!r}: {e}")
        return None


def _adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    try:
        return pydantic.TypeAdapter(hint, config=_STRICT)
    except pydantic.PydanticUserError:  # a model or dataclass: its own config, strict at the call
        return pydantic.TypeAdapter(hint)


def exposed_methods(class_name: str, methods: Sequence[MethodInfo]) -> dict[str, ExposedMethod]:
    """The methods of an actor's method table that the gateway exposes, by name ({} for an
    actor that is not typed)."""
    exposed: dict[str, ExposedMethod] = {}
    for info in methods:
        if not info.typed or info.name.startswith("_") or info.generator or info.num_returns != 1:
            continue
        try:
            signature, hints = cloudpickle.loads(info.typed)
        except Exception as e:  # a hint's type is not importable in the gateway's process
            log.warning("%s.%s is not exposed: its type hints cannot be read here: %r", class_name, info.name, e)
            continue
        try:
            exposed[info.name] = ExposedMethod(f"{class_name}.{info.name}", signature, hints)
        except pydantic.PydanticUserError as e:
            log.warning("%s.%s is not exposed: %s", class_name, info.name, e)
    return exposed


def positional_parameters(method: ExposedMethod) -> list[Parameter]:
    return [p for p in method.parameters if p.kind in _POSITIONAL]
