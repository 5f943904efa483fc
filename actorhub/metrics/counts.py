"""The counts a worker keeps on its hot paths: plain ints, never a Prometheus object.

Calls and tasks bump these (an attribute or dict increment, tens of nanoseconds); the
publisher (`metrics/worker_metrics.py`) copies them into the node's metrics once a second. A
threaded actor's threads may race on an increment and lose one in rare cases: acceptable for
metrics, and cheaper than a lock per call.
"""

from __future__ import annotations


class CallCounts:
    """The actor calls of this process's actor, since it started."""

    __slots__ = ("ended", "failed", "received", "started")

    def __init__(self) -> None:
        self.received = 0  # admitted into the mailbox (worker/service.py)
        self.started = 0  # began running (worker/mailbox.py)
        self.ended = 0  # finished, with a value or an error
        self.failed = 0  # of those ended, with an error


class TaskCounts:
    """The tasks this process (a task executor) ran, by task name."""

    __slots__ = ("failed", "finished", "started")

    def __init__(self) -> None:
        self.started: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    def begin(self, name: str) -> None:
        self.started[name] = self.started.get(name, 0) + 1

    def end(self, name: str, ok: bool) -> None:
        into = self.finished if ok else self.failed
        into[name] = into.get(name, 0) + 1


CALLS = CallCounts()
TASKS = TaskCounts()
