"""The `actorhub` command line, run as a separate process against real clusters."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "actorhub.cli"]


def actorhub_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def run_driver(body: str) -> None:
    """Run a separate program to completion; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"driver failed:\n{result.stdout}\n{result.stderr}"


def ok(*args: str) -> str:
    """stdout of a command that must succeed."""
    result = actorhub_cli(*args)
    assert result.returncode == 0, f"actorhub {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def one_line_error(*args: str) -> str:
    """stderr of a command that must fail with one readable line, not a traceback."""
    result = actorhub_cli(*args)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def node_rows(status: str) -> list[str]:
    row = re.compile(r"\s*\w+\s+\S+:\d+\s+.*?[\d.]+/[\d.]+\s+(alive|dead)")
    return [line.strip() for line in status.splitlines() if row.fullmatch(line)]


@pytest.fixture
def head() -> Iterator[str]:
    """A cluster started by `actorhub start --head`; yields its hub address."""
    out = ok("start", "--head", "--num-cpus", "1")
    try:
        match = re.search(r"hub address:\s+(\S+)", out)
        assert match, out
        yield match.group(1)
    finally:
        # Also the cleanup when the test failed half way.
        actorhub_cli("stop")


def test_start_status_list_stop(head: str, session_root: Path) -> None:
    status = ok("status")
    assert f"Cluster at {head}" in status
    rows = node_rows(status)
    assert len(rows) == 1 and rows[0].split()[-2:] == ["1/1", "alive"], status
    assert "Actors: 0 live" in status

    # A separate program joins by "auto" and leaves a detached actor behind.
    run_driver(
        """
        import actorhub
        actorhub.init(address="auto")

        @actorhub.remote
        class Keeper:
            def ping(self):
                return "pong"

        keeper = Keeper.options(name="keeper", lifetime="detached").remote()
        assert actorhub.get(keeper.ping.remote()) == "pong"
        """
    )
    listing = ok("list", "actors", "--all-namespaces")
    header, *lines = listing.splitlines()
    assert header.split() == ["ACTOR", "ID", "CLASS", "NAME", "NAMESPACE", "STATE", "PID", "NODE"]
    assert len(lines) == 1, listing
    _, class_name, name, _, state, pid, _ = lines[0].split()
    assert (class_name, name, state) == ("Keeper", "keeper", "ALIVE")
    assert int(pid) > 0
    assert ok("list", "actors") == listing  # all namespaces is the default, as in Ray
    assert "No live actors" in ok("list", "actors", "--namespace", "elsewhere")
    assert "Actors: 1 live (1 ALIVE)" in ok("status", "--address", head)

    stopped = ok("stop")
    assert f"Stopped the cluster at {head}" in stopped
    # The autouse fixture fails the test if any process of the cluster is still alive.
    assert ok("stop").strip() == "No running cluster."
    assert "no running cluster" in one_line_error("status")


def test_start_address_adds_a_node(head: str) -> None:
    out = ok("start", "--address", head, "--num-cpus", "2")
    match = re.search(r"Started node (\w+)", out)
    assert match, out
    rows = node_rows(ok("status"))
    assert len(rows) == 2, rows
    assert any(r.split()[0] == match.group(1) and r.split()[-2:] == ["2/2", "alive"] for r in rows), rows


def test_status_finds_the_running_cluster_after_a_failed_start(head: str) -> None:
    # The failed start made a newer session, now `latest`, whose hub never served.
    port = head.rsplit(":", 1)[1]
    result = actorhub_cli("start", "--head", "--port", port)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    assert f"Cluster at {head}" in ok("status")


def test_without_a_cluster_errors_are_one_line() -> None:
    assert "no running cluster" in one_line_error("status")
    assert "no running cluster" in one_line_error("list", "actors")
    assert "no local session for 127.0.0.1:1" in one_line_error("start", "--address", "127.0.0.1:1")
    assert ok("stop").strip() == "No running cluster."


def test_microbenchmark_prints_one_line_per_selected_metric() -> None:
    out = ok("microbenchmark", "--filter", "1:1 actor calls sync", "--scale", "0.1")
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert re.fullmatch(r"1:1 actor calls sync per second [\d.]+ \+- [\d.]+", lines[0]), lines


def test_microbenchmark_filter_can_select_nothing() -> None:
    # Nothing selected: no cluster is started and nothing is printed.
    assert ok("microbenchmark", "--filter", "no such metric") == ""
