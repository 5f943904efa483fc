"""Helpers for tests that run separate driver programs against a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def driver_script(body: str) -> list[str]:
    """Command line of a separate driver program running `body`."""
    return [sys.executable, "-c", textwrap.dedent(body)]


def run_driver(body: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a separate application to completion; fails the test with its output if it fails."""
    result = subprocess.run(
        driver_script(body),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        cwd=REPO,
    )
    if result.returncode != 0:
        pytest.fail(f"driver failed ({result.returncode}):\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


# A driver-defined Counter for scripts that need one actor class with state and a pid.
COUNTER = """
import os, actorhub

@actorhub.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
    def pid(self):
        return os.getpid()
"""
