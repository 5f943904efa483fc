"""Worker process titles, as `ps` and /proc/<pid>/cmdline show them: `actorhub::IDLE` for a
worker waiting for work, `actorhub::ClassName` for an actor's, `actorhub::<task name>` while a
task executor runs a task (Ray's `ray::...`).

The title keeps "actorhub" in it: tools (and the tests' leak check) find a cluster's
processes by that word in their command line. Setting it costs about a microsecond.
"""

from __future__ import annotations

from setproctitle import setproctitle

PREFIX = "actorhub::"
IDLE = PREFIX + "IDLE"


def set_title(what: str) -> None:
    """Show `what` (an actor's class, a task's name) after the prefix; "" shows IDLE."""
    setproctitle(PREFIX + what.replace("\n", " ") if what else IDLE)
