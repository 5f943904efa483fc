"""Reading the process tree from /proc, for tests that check which processes exist."""

from __future__ import annotations

import os
from pathlib import Path


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
