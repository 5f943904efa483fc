"""Hosts simulated on one machine: a 127.0.0.x address each, and a HOME and TMPDIR of its own.

Linux routes all of 127/8 to the loopback device, so servers bound to 127.0.0.2 and 127.0.0.3
are as distinct as two machines' addresses; with a TMPDIR each, every host has its own session
root, so nothing is shared between them but the network and whatever the test hands over (the
token). Every command runs as a separate process with the host's environment, which carries
none of the test process's ACTORHUB_* settings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "actorhub.cli"]


@dataclass
class Host:
    name: str
    ip: str
    home: Path

    def __post_init__(self) -> None:
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)

    @property
    def session_root(self) -> Path:
        return self.home / "tmp" / f"actorhub-{os.getuid()}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORHUB_") and k != "RAY_ADDRESS"}
        env.update(HOME=str(self.home), TMPDIR=str(self.home / "tmp"), ACTORHUB_NODE_IP_ADDRESS=self.ip,
                   ACTORHUB_PRESTART_WORKERS="1")
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 90.0, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.env(**extra), cwd=REPO)

    def ok(self, *args: str, **extra: str) -> str:
        result = self.cli(*args, **extra)
        shown = f"{self.name}: actorhub {' '.join(args)}"
        assert result.returncode == 0, f"{shown} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def error(self, *args: str, **extra: str) -> str:
        """The one line a command that must fail prints (no traceback)."""
        result = self.cli(*args, **extra)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        return lines[0]

    def python(self, body: str, timeout: float = 90.0, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run a program on this host (not checked)."""
        return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env=self.env(**extra), cwd=REPO)

    def driver(self, body: str, timeout: float = 90.0, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run a program on this host; it must succeed."""
        result = self.python(body, timeout, **extra)
        assert result.returncode == 0, f"{self.name}: driver failed:\n{result.stdout}\n{result.stderr}"
        return result

    def popen(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=self.env(**extra), cwd=REPO)

    def stop(self) -> None:
        self.cli("stop")


def hub_address(start_output: str) -> str:
    match = re.search(r"hub address:\s+(\S+)", start_output)
    assert match, start_output
    return match.group(1)


class Output:
    """A running process's stdout, collected line by line on a thread of its own."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            return next((m for line in list(self.lines) if (m := re.search(pattern, line))), None)

        deadline = time.monotonic() + timeout
        while (match := found()) is None:
            assert self.proc.poll() is None or self._thread.is_alive(), \
                f"exited {self.proc.returncode} without {pattern!r}:\n{self.text}"
            assert time.monotonic() < deadline, f"no line matching {pattern!r} within {timeout} s:\n{self.text}"
            time.sleep(0.05)
        return match

    @property
    def text(self) -> str:
        return "".join(self.lines)
