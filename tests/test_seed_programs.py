"""The seeds' Ray programs, in examples/, run as users run them: `python examples/NAME.py`.

Each program checks its own results and exits non-zero when one is wrong; these tests also
read what it printed.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from _drivers import REPO


def run_example(name: str) -> str:
    """Run examples/NAME.py to completion and return what it printed; fail with its output if it fails."""
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if out.returncode != 0:
        pytest.fail(f"examples/{name}.py failed ({out.returncode}):\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}")
    return out.stdout


def seconds_after(label: str, text: str) -> list[float]:
    return [float(s) for s in re.findall(rf"{re.escape(label)}\s*(\d+\.\d+)", text)]


def test_pans() -> None:
    out = run_example("pans")
    assert "one boiling spell on each of the 10 pans: [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]" in out
    assert "five boiling spells on pan 0: [20, 30, 40, 50, 60]" in out


def test_parallel_sleeps() -> None:
    out = run_example("parallel_sleeps")
    assert "result from Ray: ['some_result', 'some_result', 'some_result', 'some_result']" in out
    local, remote = seconds_after("elapsed time (s):", out)
    assert local >= 4.0
    assert remote < 2.5, out


def test_reference_data() -> None:
    out = run_example("reference_data")
    all_ten = (
        "data = [(0, 0, 'Fast'), (1, 2, 'and'), (2, 4, 'Simple'), (3, 6, 'Distributed'), (4, 8, 'Computing'), "
        "(5, 10, 'Fast'), (6, 12, 'and'), (7, 14, 'Simple'), (8, 16, 'Distributed'), (9, 18, 'Computing')]"
    )
    assert out.count(all_ten) >= 3, out  # one by one, first attempt, with ray.put
    assert out.count("finished data = [") >= 2, out  # ray.wait handed results back as they came


def test_foreign_key_chain() -> None:
    out = run_example("foreign_key_chain")
    assert "((2, 4, 'Simple'), (4, 8, 'Computing'))\n" in out
    assert "((4, 8, 'Computing'), (8, 16, 'Distributed'))\n" in out
    assert "((6, 12, 'and'), (12, 24, 'Simple'))\n" in out


def test_tree_aggregation() -> None:
    out = run_example("tree_aggregation")
    assert out.count("the sum of 1..8 is 36") == 4, out
    assert "the tree of depth 3 beat the chain of depth 7 both times" in out


def test_flaky_task() -> None:
    out = run_example("flaky_task")
    assert "result from Ray: some_result" in out
    assert "result from the task that exits twice: some_result, on attempt 3" in out


def test_reference_tracker() -> None:
    out = run_example("reference_tracker")
    assert "counts = [2, 2, 2, 2, 2]" in out
    assert "counts = [4, 4, 4, 4, 4]" in out


def test_parameter_server() -> None:
    out = run_example("parameter_server")
    assert "every shard applied [160, 160, 160, 160] pushes" in out
    assert "the final parameters equal the expected ones exactly" in out
