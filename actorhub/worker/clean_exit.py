"""The graceful end of an actor: its cleanup hooks, run once before its worker leaves.

As in Ray, an actor that ends gracefully (`__ray_terminate__`, `exit_actor`, or once no handle
to it is left) runs `__ray_shutdown__()` if its class defines one, then the atexit handlers
registered in its process. A forced end (`kill`, a node or owner gone) runs neither: the worker
is SIGKILLed. Workers leave with `os._exit`, which skips atexit, so the handlers are run here.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import threading

log = logging.getLogger(__name__)

_ran = threading.Event()
_lock = threading.Lock()


def run_exit_hooks(instance: object) -> None:
    """Run the actor's `__ray_shutdown__` then the process's atexit handlers, once per process.

    Errors are logged (to the worker's stderr log) and swallowed: the actor is ending anyway,
    and one failing hook must not keep the others from running. `instance` is the user's
    object (None when its constructor never finished: only the atexit handlers run then).
    Call it from a thread with no running event loop.
    """
    with _lock:
        if _ran.is_set():
            return
        _ran.set()
    shutdown = getattr(instance, "__ray_shutdown__", None) if instance is not None else None
    if callable(shutdown):
        try:
            result = shutdown()
            if inspect.iscoroutine(result):
                # An async actor's: run here, off its loop (the caller is not on a running loop).
                asyncio.run(result)
        except BaseException:  # user code may raise anything, SystemExit included
            log.exception("__ray_shutdown__ of %s failed", type(instance).__name__)
    try:
        # Runs every handler even when one raises (each error is printed to stderr), last
        # registered first, as at interpreter exit; cleared so nothing runs them twice.
        atexit._run_exitfuncs()
        atexit._clear()
    except BaseException:
        log.exception("the atexit handlers of the actor's process failed")
