"""`actorhub.actor`, Ray's `ray.actor`: the actor classes, handles and methods, `exit_actor()`,
and `checkpoint()` (actorhub's own)."""

from __future__ import annotations

import asyncio
from typing import NoReturn

from actorhub.api.actor_class import ActorClass
from actorhub.api.actor_handle import ActorHandle, ActorMethod
from actorhub.exceptions import AsyncioActorExit
from actorhub.runtime import task_context
from actorhub.runtime.runtime import current_or_none
from actorhub.worker.actor_exit import ExitActorCalled

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "checkpoint", "exit_actor"]


def checkpoint() -> None:
    """Save the calling actor's state now (`__actorhub_checkpoint__`), as its newest checkpoint;
    returns once it is durably stored. Raises TypeError outside the method of an actor that
    defines `__actorhub_checkpoint__` and `__actorhub_restore__`, and the store's error if it
    could not be saved (worker/checkpoints.py)."""
    from actorhub.worker import checkpoints

    checkpointer = checkpoints.current()
    runtime = current_or_none()
    if checkpointer is None or runtime is None or not runtime.actor_id or task_context.running_task() is not None:
        raise TypeError(
            "checkpoint() is called outside a checkpointed actor: call it in a method of an actor whose class "
            "defines __actorhub_checkpoint__(self) and __actorhub_restore__(self, state)"
        )
    checkpointer.take()


def exit_actor() -> NoReturn:
    """End the actor this runs in, intentionally, from inside one of its methods.

    The call that runs it fails for its caller with ActorDiedError saying the actor exited
    intentionally; calls not started yet fail the same way and never run; calls under way (a
    threaded or async actor) finish first; `__ray_shutdown__` and atexit handlers run; the actor
    is never restarted, whatever its `max_restarts`. Raises TypeError outside an actor method
    (in a driver or a task); use `kill(handle)` to end an actor from outside.
    """
    runtime = current_or_none()
    if runtime is None or not runtime.actor_id or task_context.running_task() is not None:
        raise TypeError(
            "exit_actor() is called outside an actor: call it inside an actor's method to end that "
            "actor, or use kill(handle) to end one from outside"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ExitActorCalled() from None
    # On an async actor's loop a SystemExit would stop the loop, not end the call, as in Ray.
    raise AsyncioActorExit("exit_actor() was called")
