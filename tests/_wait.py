"""Polling for the tests: wait until a condition holds, or fail the test naming what it waited for."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
def wait_for(check: Callable[[], T | None], what: str, timeout: float = 30.0, pause: float = 0.05) -> T: ...


@overload
def wait_for(
    check: Callable[[], T], what: str, timeout: float = 30.0, pause: float = 0.05, *, ok: Callable[[T], object]
) -> T: ...


def wait_for(
    check: Callable[[], Any], what: str, timeout: float = 30.0, pause: float = 0.05, *,
    ok: Callable[[Any], object] | None = None,
) -> Any:
    """Call `check` every `pause` seconds until its value is truthy (or satisfies `ok`); that value.

    After `timeout` seconds an AssertionError names `what` ("the node to join") and the last
    value seen: with `ok`, `check` reads the state (a listing, a scrape) and the failure shows it.
    An exception from `check` is not retried: it fails the test at once, saying what went wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if ok(value) if ok is not None else value:
            return value
        if time.monotonic() > deadline:
            seen = "" if value is None or isinstance(value, bool) else f"; last seen: {value!r}"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(pause)


def collecting(check: Callable[[], T]) -> Callable[[], T]:
    """`check`, asked after a garbage collection: a dropped handle or ref caught in a reference
    cycle is released only once the cycle is collected."""

    def collected() -> T:
        gc.collect()
        return check()

    return collected
