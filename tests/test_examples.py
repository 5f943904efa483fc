"""The examples run as users run them."""

from __future__ import annotations

import subprocess
import sys

from _drivers import REPO


def test_quickstart() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "count went [2, 3, 4]" in out.stdout
    assert "no process is left behind" in out.stdout


def test_kv_service() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "kv_service.py")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "greeting = hello" in out.stdout
    health_ms = int(out.stdout.split("health answered in ", 1)[1].split(" ms", 1)[0])
    assert health_ms < 1000  # not behind the two 2 s requests of the busy "data" group
    assert "(KeyValueService pid=" in out.stdout and "stored 'greeting'" in out.stdout  # its logs, here
    assert "exited intentionally: exit_actor() was called in KeyValueService.stop" in out.stdout
