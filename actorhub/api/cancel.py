"""cancel(): of a task or an actor call, by the process that made it (a borrower's goes there).

Split from cluster.py; `actorhub.cancel` is this. Imported on first use, with the kernel.
"""

from __future__ import annotations

from typing import Any

from actorhub.api.cluster import connected_runtime
from actorhub.runtime.object_ref import ObjectRef
from actorhub.runtime.runtime import Runtime


def cancel(ref: ObjectRef[Any], *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes `ref`: a queued task never runs, a running one is interrupted
    (force=True kills its worker). get() of its results raises TaskCancelledError."""
    from actorhub.runtime.object_ref_generator import ObjectRefGenerator

    if isinstance(ref, ObjectRefGenerator):
        ref = ref.completed()  # the streaming call (or task) it reads, as in Ray
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, not {type(ref).__name__}")
    runtime = connected_runtime()
    owner = ref.owner_address
    if owner and owner != runtime.address:
        # Borrowed: only its owner knows the call or task, as in Ray the cancel goes there.
        from actorhub.wire.worker import WorkerClient

        refused = WorkerClient(runtime.channels, owner, runtime.deadlines, "owner").cancel_call(
            ref.hex(), force, recursive
        )
        if refused:
            raise ValueError(refused)
        return
    cancel_owned(runtime, ref, force, recursive)


def cancel_owned(runtime: Runtime, ref: ObjectRef[Any] | str, force: bool, recursive: bool) -> None:
    """cancel() of a call or task `runtime`'s process made (`ref`, or its id for a borrower)."""
    if isinstance(ref, str):
        ref = runtime.refs_for([ref])[0]
    object_id = ref.hex()
    origin = runtime.objects.pending_origin(object_id)
    if origin is not None and origin.actor_id:
        # An actor call: a queued one never runs, a running coroutine is cancelled, a running
        # thread finishes (an actor's state cannot be interrupted safely), as in Ray.
        if force:
            raise ValueError(f"force=True is not supported for actor calls ({origin.function_name})")
        runtime.cancel_call(object_id)
        return
    from actorhub.tasks.submitters import submitter_for  # tasks build on the kernel: imported on use

    submitter_for(runtime).cancel(ref, force, recursive)
