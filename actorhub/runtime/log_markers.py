"""Marker lines: what a worker writes into its own stdout and stderr files to say whose output follows.

A worker's output files (`logs/worker-<id>.out|.err`) carry, besides what the user's code
writes, lines that start with one of the prefixes below. They attribute the lines after them
to a job and an actor or task, for the node's log monitor (`node/log_monitor.py`) and
`actorhub logs`, which never show them. A worker writes:

- at its start, `:node_id:` and `:pid:` (the file's first lines: a node agent tails only the
  files of its own workers, even when two nodes on one host share a session directory);
- when it becomes an actor, `:job_id:` (the job that created it), `:actor_id:`, `:actor_name:`
  (the class, as Ray prints it; after the constructor, its repr if the class defines
  `__repr__`, as in Ray) and, for a named actor, `:name:`;
- in a task executor, `:job_id:` and `:task_name:` when the task's job or name differs from
  the last task's, so a stream of one function's tasks writes nothing per call.

Both files get every marker, each written straight to its descriptor after Python's buffered
stream was flushed, so markers and the output around them stay in order.
"""

from __future__ import annotations

import os
import sys
import threading

NODE_ID = ":node_id:"
PID = ":pid:"
JOB_ID = ":job_id:"
ACTOR_ID = ":actor_id:"
ACTOR_NAME = ":actor_name:"
NAME = ":name:"
TASK_NAME = ":task_name:"
PREFIXES = (NODE_ID, PID, JOB_ID, ACTOR_ID, ACTOR_NAME, NAME, TASK_NAME)

_lock = threading.Lock()
_marked: tuple[str, str] = ("", "")  # the (job, task name) the files say now
_job_id = ""  # the job whose work this process runs now ("": its runtime's)


def _clean(value: str) -> str:
    # A marker is one line: a name with a line break in it would end it early.
    return value.replace("\n", " ").replace("\r", " ")


def write(fields: list[tuple[str, str]]) -> None:
    """Write the marker lines `fields` ((prefix, value) pairs) into stdout and stderr."""
    text = "".join(f"{prefix}{_clean(value)}\n" for prefix, value in fields).encode("utf-8", "backslashreplace")
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            if stream is not None:
                stream.flush()
            os.write(fd, text)
        except (OSError, ValueError):
            pass  # a closed or replaced stream: the lines after it are unattributed, nothing worse


def mark_worker(node_id: str, pid: int) -> None:
    write([(NODE_ID, node_id), (PID, str(pid))])


def mark_actor(job_id: str, actor_id: str, class_name: str, name: str) -> None:
    global _job_id
    _job_id = job_id
    fields = [(JOB_ID, job_id), (ACTOR_ID, actor_id), (ACTOR_NAME, class_name)]
    if name:
        fields.append((NAME, name))
    write(fields)


def mark_actor_repr(instance: object) -> None:
    """As Ray does, an actor whose class defines `__repr__` is shown by its repr, not its class
    name (so instances of one class can be told apart)."""
    if type(instance).__repr__ is object.__repr__:
        return
    try:
        shown = repr(instance)
    except Exception:
        return  # the class name stays: a broken __repr__ must not fail the actor's start
    write([(ACTOR_NAME, shown)])


def mark_task(job_id: str, task_name: str) -> bool:
    """Mark the start of a task of `job_id` named `task_name`; True if the marker was written
    (the job or name changed). The process's current job is `job_id` from now on."""
    global _marked, _job_id
    _job_id = job_id
    if _marked == (job_id, task_name):
        return False
    with _lock:
        if _marked == (job_id, task_name):
            return False
        _marked = (job_id, task_name)
        write([(JOB_ID, job_id), (TASK_NAME, task_name)])
    return True


def current_job(default: str) -> str:
    """The job whose work runs in this process: the task's, in a task executor (whose own
    runtime belongs to whoever created it), else `default` (the runtime's job)."""
    return _job_id or default


def is_marker(line: str) -> bool:
    return line.startswith(":") and line.startswith(PREFIXES)


def line_prefix(name: str, pid: int, where: str = "") -> str:
    """What a worker's line is shown behind, as Ray shows it: `(Counter pid=1234)`, `(pid=1234)`
    for a worker that hosts nothing yet, and `where` (", ip=10.0.0.2") after the pid."""
    return f"({name} pid={pid}{where})" if name else f"(pid={pid}{where})"
