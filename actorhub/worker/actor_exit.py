"""An actor that ends itself: `exit_actor()` and `sys.exit()` inside its methods, as Ray has them.

`exit_actor()` (actorhub/actor.py) raises `ExitActorCalled` in a thread, or `AsyncioActorExit`
on an async actor's loop (a SystemExit there would only stop the loop). The mailbox catches
either, and `sys.exit()`, where the method's exception would become its result:
- `exit_actor()`, `sys.exit()` and `sys.exit(0)` end the actor intentionally: the call that
  asked gets ActorDiedError saying so, calls not started never run, calls under way finish, the
  cleanup hooks run (`__ray_shutdown__`, atexit), and the hub records the death with that cause
  and never restarts it, whatever `max_restarts` says (`ActorInstance.request_exit`, then
  `WorkerService._watch_terminate`, the path `__ray_terminate__` takes);
- `sys.exit(code)` with another code is a crash, as in Ray: the process exits with that code at
  once and the actor restarts within `max_restarts`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

from actorhub.exceptions import AsyncioActorExit


class ExitActorCalled(SystemExit):
    """exit_actor() in a thread of an actor: unwinds the method like sys.exit(0) would."""

    def __init__(self) -> None:
        super().__init__(0)


def intentional_reason(e: BaseException, where: str) -> str | None:
    """Why the actor ends, after "The actor <label> ", when `e` ends it intentionally; None for
    a `sys.exit` with a failure code (a crash)."""
    if isinstance(e, ExitActorCalled | AsyncioActorExit):
        return f"exited intentionally: exit_actor() was called in {where}; it is not restarted"
    if isinstance(e, SystemExit) and e.code in (None, 0):
        return (f"exited intentionally: {where} called sys.exit({'' if e.code is None else 0}) "
                "(exit code 0); it is not restarted")
    return None


def crash(e: BaseException) -> NoReturn:
    """sys.exit(code) with a failure code: the worker ends now with it, as a crashed one."""
    code = e.code if isinstance(e, SystemExit) else 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if not isinstance(code, int):
        print(code, file=sys.stderr, flush=True)  # sys.exit("message"): printed, exit code 1
        code = 1
    os._exit(code)
