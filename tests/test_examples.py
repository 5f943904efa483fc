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
