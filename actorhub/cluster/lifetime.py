"""Tying a process's life to its parent's (standard library only: the zygote imports it)."""

from __future__ import annotations

import os
import sys

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def process_alive(pid: int) -> bool:
    """Whether `pid` names a running process; another user's counts as alive. A zombie does
    not: it has exited, and only waits for its parent (often init, which may reap orphans
    seconds later) to collect its status."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except FileNotFoundError:
        return not sys.platform.startswith("linux")  # gone since the kill (or no /proc here)
    except OSError:
        return True
    # The state letter follows the command name, which is in parentheses and may hold anything.
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] != b"Z"
