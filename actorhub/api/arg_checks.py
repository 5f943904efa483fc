"""Checking `.remote(...)` arguments against the signature at the caller, as Ray does.

A call whose arguments cannot bind to the function, method or constructor raises TypeError at
`.remote()`, before anything is sent, instead of failing later inside the worker. The check is
on every call's path, so each signature is read once and turned into an `ArgCheck` whose common
case (positional arguments only, a count in range) is two comparisons; anything else goes
through `inspect.Signature.bind` for the full rules and Python's own message. Signatures that
accept anything (`(*args, **kwargs)`) or cannot be read (builtins) get no check at all.

A method's check also travels as text, with the actor's method table (MethodMeta.signature):
a handle from `get_actor`, or one unpickled in another process, has no class at hand and checks
from that text instead (`text_of`, `from_text`). The text keeps what binding needs: each
parameter's kind, name and whether it has a default (never the default's value).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Iterable
from typing import Any

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

# What a handle runs on a call's (args, kwargs) before sending it: an ArgCheck, or a typed
# method's validators (api/typed.py); each raises a TypeError.
ArgsCheck = Callable[[tuple[Any, ...], dict[str, Any]], None]


class ArgCheck:
    """Raises TypeError for arguments the signature cannot take."""

    __slots__ = ("_fewest", "_most", "_signature", "_what", "text")

    def __init__(self, signature: inspect.Signature, what: str) -> None:
        self._signature = signature
        self._what = what
        params = list(signature.parameters.values())
        self.text = _text(params)
        if all(p.kind in _POSITIONAL for p in params):
            self._fewest = sum(1 for p in params if p.default is inspect.Parameter.empty)
            self._most = len(params)
        else:  # *args, keyword-only or **kwargs: always the full check
            self._fewest, self._most = 1, 0

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not kwargs and self._fewest <= len(args) <= self._most:
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self._what}: {e}") from None


def _accepts_anything(signature: inspect.Signature) -> bool:
    kinds = {p.kind for p in signature.parameters.values()}
    return inspect.Parameter.VAR_POSITIONAL in kinds and inspect.Parameter.VAR_KEYWORD in kinds and all(
        p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def _check_for(function: Any, what: str, drop_first: bool) -> ArgCheck | None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None  # no signature to check against (a builtin, a C extension)
    if drop_first:
        params = list(signature.parameters.values())
        if not params or params[0].kind not in _POSITIONAL:
            return None  # `def m(*args)`: self arrives inside args; nothing to check
        signature = signature.replace(parameters=params[1:])
    if _accepts_anything(signature):
        return None
    return ArgCheck(signature, what)


_function_checks: weakref.WeakKeyDictionary[Callable[..., Any], ArgCheck | None] = weakref.WeakKeyDictionary()


def for_function(function: Callable[..., Any], name: str) -> ArgCheck | None:
    """The check of a remote function's arguments (computed once per function: `.options()`
    copies, made per call by some programs, share it)."""
    try:
        return _function_checks[function]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable (a callable object without __weakref__)
        return _check_for(function, f"{name}.remote()", drop_first=False)
    check = _function_checks[function] = _check_for(function, f"{name}.remote()", drop_first=False)
    return check


# Per class, the checks of its constructor and methods: computed once, whatever the number of
# actors or `.options()` copies. Weak keys: a class dropped by the program takes its checks along.
_class_checks: weakref.WeakKeyDictionary[type, dict[str, ArgCheck]] = weakref.WeakKeyDictionary()

CONSTRUCTOR = "__init__"


def for_class(cls: type) -> dict[str, ArgCheck]:
    """Checks of `cls`'s constructor (under "__init__") and its methods, by name."""
    checks = _class_checks.get(cls)
    if checks is not None:
        return checks
    checks = {}
    constructor = inspect.getattr_static(cls, "__init__", None)
    if inspect.isfunction(constructor):  # object.__init__ (none defined) is a slot wrapper: no check
        init = _check_for(constructor, f"{cls.__name__}.remote()", drop_first=True)
        if init is not None:
            checks[CONSTRUCTOR] = init
    for name in dir(cls):
        if name.startswith("__"):
            continue
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, staticmethod):
            check = _check_for(attr.__func__, f"{cls.__name__}.{name}.remote()", drop_first=False)
        elif isinstance(attr, classmethod):
            check = _check_for(attr.__func__, f"{cls.__name__}.{name}.remote()", drop_first=True)
        elif inspect.isfunction(attr):
            check = _check_for(attr, f"{cls.__name__}.{name}.remote()", drop_first=True)
        else:
            continue
        if check is not None:
            checks[name] = check
    _class_checks[cls] = checks
    return checks


# The text form: parameters joined by ";", each its kind's number (inspect.Parameter.kind), its
# name, and a trailing "=" when it has a default. Names are identifiers: neither ";" nor "=".
_SEPARATOR = ";"
_HAS_DEFAULT = "="
_KINDS = {int(k): k for k in (
    inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL,
    inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD,
)}


def _text(params: Iterable[inspect.Parameter]) -> str:
    return _SEPARATOR.join(
        f"{int(p.kind)}{p.name}{_HAS_DEFAULT if p.default is not inspect.Parameter.empty else ''}" for p in params
    )


def text_of(check: ArgCheck | None) -> str:
    """The check as MethodMeta.signature carries it ("" for no check)."""
    return check.text if check is not None else ""


class _Default:
    """Stands for a default the text does not carry: binding needs only that there is one."""

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT = _Default()


@functools.lru_cache(maxsize=4096)
def from_text(text: str, what: str) -> ArgCheck | None:
    """The check that `text` (from `text_of`) describes; None for "" or a text this version
    cannot read (a newer caller's: the actor then checks the call itself, as it always can).
    Cached: every handle to one actor class shares its checks."""
    if not text:
        return None
    try:
        params = []
        for item in text.split(_SEPARATOR):
            has_default = item.endswith(_HAS_DEFAULT)
            name = item[1:-1] if has_default else item[1:]
            params.append(inspect.Parameter(
                name, _KINDS[int(item[0])], default=_DEFAULT if has_default else inspect.Parameter.empty,
            ))
        return ArgCheck(inspect.Signature(params), what)
    except (KeyError, ValueError, IndexError):
        return None


def for_methods(class_name: str, signatures: Iterable[tuple[str, str]]) -> dict[str, ArgCheck]:
    """The checks of an actor's methods from their texts ((name, text) pairs), by name."""
    checks: dict[str, ArgCheck] = {}
    for name, text in signatures:
        check = from_text(text, f"{class_name}.{name}.remote()")
        if check is not None:
            checks[name] = check
    return checks
