"""The task submitter of the process's runtime, made on first use.

Tasks are optional to the kernel, so the runtime does not make its submitter (runtime/
imports nothing from tasks/): the first `f.remote()` or `cancel()` does, through this module,
and the runtime closes it with itself.
"""

from __future__ import annotations

import threading

from actorhub.runtime.runtime import Runtime
from actorhub.tasks.submitter import TaskSubmitter

_lock = threading.Lock()
# One runtime per process at a time: the submitter of the newest one that submitted a task.
_made: tuple[Runtime, TaskSubmitter] | None = None


def submitter_for(runtime: Runtime) -> TaskSubmitter:
    global _made
    made = _made
    if made is not None and made[0] is runtime:
        return made[1]  # no lock on the path of every f.remote()
    with _lock:
        made = _made
        if made is None or made[0] is not runtime:
            submitter = TaskSubmitter(runtime)
            runtime.add_close_hook(submitter.close)
            made = _made = (runtime, submitter)
        return made[1]


def existing_submitter(runtime: Runtime) -> TaskSubmitter | None:
    """The submitter of `runtime` if it made one (it has submitted or cancelled a task), else None."""
    made = _made
    return made[1] if made is not None and made[0] is runtime else None
