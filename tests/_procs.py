"""Reading the process tree from /proc, for tests that check which processes exist."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def parents() -> dict[int, int]:
    """Every live process's parent, by pid."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    return found


def children(pid: int) -> set[int]:
    return {child for child, parent in parents().items() if parent == pid}


def gone(pid: int) -> bool:
    """Dead, or a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stop(pid: int) -> None:
    """SIGSTOP `pid` and wait until every thread of it has stopped.

    kill() only queues the signal: on a loaded machine a thread of the target can still run
    for a moment, and answer a call sent right after. A stopped thread reads "T" in its stat.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not all(
        task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        for task in Path(f"/proc/{pid}/task").iterdir()
    ):
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.005)


def end(process: subprocess.Popen[Any], wait_s: float = 10.0) -> None:
    """SIGTERM `process` (a node agent a test started, say) and reap it; SIGKILL it when it
    does not end within `wait_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
