"""Keeping a process's two gRPC I/O threads on one CPU.

Every message a process sends or receives crosses two of its threads: gRPC's asyncio poller
thread reads the completion queue and hands each event to the event loop's thread, about six
hand-overs per small call on each side. When the thread handed to sleeps on another CPU that
is idle, the hand-over waits for that CPU to wake, which on a virtual machine (an idle vCPU
halts) costs tens of microseconds each. With both threads on one CPU a hand-over is a context
switch. On the 2-CPU machine `1:1 actor calls sync` went from about 2,150 to 3,300-3,700 per
second alone, and by 1.2x in a whole `actorhub microbenchmark`; pinning only one of the two,
or the caller's main thread too, gained nothing. The price: a loop can no longer move to an
idle CPU, so with many busy processes (`1:n` and `n:n actor calls async`) throughput fell
8-16%, still far above Ray's.

Each process takes one CPU of those it may use, spread by pid, for both threads. Only these
two: the main thread, an actor's threads and every task keep all of the process's CPUs.
A thread inherits the CPUs of the thread that starts it, so threads started from the loop
(an actor's mailbox, the loop's executor) call `release_current_thread()` first.
`ACTORHUB_PIN_IO_THREADS=0` turns it off (`Config.pin_io_threads`).
"""

from __future__ import annotations

import os
import threading

# grpc.aio's poller thread runs PollerCompletionQueue._poll_wrapper; Python names a thread
# after its target, which is the only handle gRPC gives on it.
_POLLER_TARGET = "_poll_wrapper"

# All of the process's CPUs, read before anything was pinned; None: nothing was pinned. A
# forked child keeps the value, which is still right: it has its parent's CPUs.
_process_cpus: set[int] | None = None


def poller_thread() -> threading.Thread | None:
    """gRPC's asyncio poller thread, once grpc.aio has started it; None if not found."""
    for thread in threading.enumerate():
        if thread.name.endswith(f"({_POLLER_TARGET})"):
            return thread
    return None


def io_cpu(cpus: set[int], pid: int) -> int:
    """The CPU a process's I/O threads share: one of `cpus`, spread by pid."""
    ordered = sorted(cpus)
    return ordered[pid % len(ordered)]


def pin_io_threads(loop_thread: threading.Thread) -> int | None:
    """Put the loop's thread and gRPC's poller thread on one CPU; the CPU, or None when there
    is nothing to gain (one CPU) or the poller is not found (another gRPC version)."""
    global _process_cpus
    cpus = _process_cpus if _process_cpus is not None else set(os.sched_getaffinity(0))
    poller = poller_thread()
    if len(cpus) < 2 or poller is None or poller.native_id is None or loop_thread.native_id is None:
        return None
    cpu = io_cpu(cpus, os.getpid())
    try:
        for thread in (loop_thread, poller):
            os.sched_setaffinity(thread.native_id, {cpu})  # type: ignore[arg-type]
    except OSError:  # a cgroup may forbid it: the threads stay where they were
        return None
    _process_cpus = cpus
    return cpu


def release_current_thread() -> None:
    """Give the calling thread all of the process's CPUs again (it was started by a pinned
    thread and inherited its one CPU). Cheap when it has them already."""
    if _process_cpus is None:
        return  # nothing was ever pinned in this process
    try:
        if os.sched_getaffinity(0) != _process_cpus:
            os.sched_setaffinity(0, _process_cpus)
    except OSError:
        pass
