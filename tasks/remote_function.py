"""RemoteFunction: what `@actorhub.remote` makes of a function."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Generic, ParamSpec, TypeVar

from actorhub.api import arg_checks
from actorhub.api.cluster import connected_runtime
from actorhub.exceptions import OptionsError
from actorhub.runtime import placement_scope
from actorhub.runtime import serialization as _serialization
from actorhub.tasks.options import TaskOptions
from actorhub.util.placement_group import captured_options

P = ParamSpec("P")
R = TypeVar("R")


class RemoteFunction(Generic[P, R]):
    """`f.remote(*args)` runs `f` as a task and returns an ObjectRef at once."""

    def __init__(self, function: Any, options: TaskOptions, _code: list[tuple[str, bytes]] | None = None) -> None:
        self._function = function
        self._options = _generator_options(function, options)
        _serialization.ship_module_of(function)
        self._check = arg_checks.for_function(function, getattr(function, "__qualname__", "task"))
        # Shared with the copies .options() makes: the function is pickled once.
        self._code: list[tuple[str, bytes]] = _code if _code is not None else []
        self.__name__ = getattr(function, "__name__", "task")
        self.__qualname__ = getattr(function, "__qualname__", self.__name__)
        self.__doc__ = getattr(function, "__doc__", None)

    @property
    def task_name(self) -> str:
        return self._options.name or self.__qualname__

    def code(self) -> tuple[str, bytes]:
        """(id, pickled function): the id lets executors keep the function between tasks."""
        if not self._code:
            blob = _serialization.dumps(self._function)
            self._code.append((hashlib.blake2b(blob, digest_size=12).hexdigest(), blob))
        return self._code[0]

    def options(self, **options: Any) -> RemoteFunction[P, R]:
        merged = self._options.merged(f"{self.__qualname__}.options()", **options)
        return RemoteFunction(self._function, merged, self._code)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        from actorhub.tasks.submitters import submitter_for  # imports this module

        check = self._check
        if check is not None:
            check(args, kwargs)  # TypeError here, before anything is sent
        options = self._options
        if placement_scope.current() is not None and options.scheduling_strategy is None:
            options = captured_options(options)  # an actor capturing its child tasks into its group
        return submitter_for(connected_runtime()).submit(self, options, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote functions cannot be called directly; use {self.__qualname__}.remote(...)"
        )

    def __repr__(self) -> str:
        return f"RemoteFunction({self.__qualname__})"


def _generator_options(function: Any, options: TaskOptions) -> TaskOptions:
    """A generator function streams its items unless its num_returns says otherwise (as in
    Ray); num_returns="streaming" or "dynamic" needs a generator function."""
    inner = inspect.unwrap(function)
    is_generator = inspect.isgeneratorfunction(inner)
    name = getattr(function, "__qualname__", repr(function))
    if "num_returns" not in options.model_fields_set:
        return options.merged(f"@remote on {name}", num_returns="streaming") if is_generator else options
    if isinstance(options.num_returns, str) and inspect.isfunction(inner) and not is_generator:
        raise OptionsError(
            f"invalid options for {name}: num_returns={options.num_returns!r} needs a generator function "
            "(one that yields)"
        )
    return options
