"""The process's current runtime: one slot, set at the process's edge, read by everyone.

`init()` sets it in a driver, StartActor in a worker; `shutdown()` clears it. This module
imports nothing from actorhub at run time, so the lowest modules (ObjectRef, which needs the
runtime to adopt a ref it unpickles) can read the slot without importing the runtime itself.
`runtime.runtime.current()` is the typed way in for everyone else.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Protocol


class RefHost(Protocol):
    """What ObjectRef asks of the process's runtime (a Protocol: no import of runtime.runtime)."""

    def adopt_ref(self, object_id: str, owner_address: str) -> Any: ...

    def future_of(self, ref: Any) -> concurrent.futures.Future[Any]: ...


_runtime: RefHost | None = None


def set_runtime(runtime: RefHost | None) -> None:
    global _runtime
    _runtime = runtime


def runtime_or_none() -> RefHost | None:
    return _runtime
