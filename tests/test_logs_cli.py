"""`actorhub logs`: workers' output read from a session's files, filtered by actor and node, followed."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _drivers import REPO

import actorhub
from actorhub.cli import main as cli_main


@actorhub.remote
class Talker:
    def say(self, text: str) -> int:
        print(text)
        return os.getpid()


def test_logs_shows_one_actors_lines_by_name_or_id_and_filters_by_node(
    shared_cluster: actorhub.ClusterContext, capsys: pytest.CaptureFixture[str]
) -> None:
    named = Talker.options(name="cli-talker").remote()
    other = Talker.remote()
    pid = actorhub.get(named.say.remote("from the named talker"))
    actorhub.get(other.say.remote("from another talker"))
    session = shared_cluster.session_dir
    _printed_by_the_driver(capsys, "from the named talker", "from another talker")
    assert cli_main(["logs", "--actor", "cli-talker", "--session", session]) == 0
    shown = capsys.readouterr().out
    assert f"(Talker pid={pid}) from the named talker" in shown.splitlines()
    assert "from another talker" not in shown
    assert cli_main(["logs", "--actor", named.actor_id, "--session", session]) == 0
    assert "from the named talker" in capsys.readouterr().out
    assert cli_main(["logs", "--node", shared_cluster.node_id, "--session", session]) == 0
    everything = capsys.readouterr().out
    assert "from the named talker" in everything and "from another talker" in everything
    assert cli_main(["logs", "--node", "no-such-node", "--session", session]) == 0
    assert capsys.readouterr().out == ""
    assert ":job_id:" not in everything


def _printed_by_the_driver(capsys: pytest.CaptureFixture[str], *texts: str) -> None:
    """Wait until this process (the driver) printed `texts`, so what the command prints next is its own."""
    seen = ""
    deadline = time.monotonic() + 30
    while not all(text in seen for text in texts):
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
        seen += capsys.readouterr().out


def test_logs_follow_prints_lines_as_workers_write_them(shared_cluster: actorhub.ClusterContext) -> None:
    talker = Talker.options(name="followed-talker").remote()
    actorhub.get(talker.say.remote("written before following"))
    command = [sys.executable, "-m", "actorhub.cli", "logs", "-f", "--actor", "followed-talker",
               "--session", shared_cluster.session_dir]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    lines: queue.Queue[str] = queue.Queue()
    output = process.stdout
    assert output is not None

    def read() -> None:
        for line in output:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert "written before following" in lines.get(timeout=30)
        actorhub.get(talker.say.remote("written while following"))
        deadline = time.monotonic() + 30
        while "written while following" not in (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))):
            pass
        assert line.startswith("(Talker pid=")
    finally:
        process.kill()
        process.wait()


def test_logs_without_a_session_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ACTORHUB_SESSION_ROOT", str(tmp_path / "empty"))
    assert cli_main(["logs"]) == 1
    assert "actorhub logs: no session under" in capsys.readouterr().err
    assert cli_main(["logs", "--session", str(tmp_path)]) == 1
    assert "not a session directory" in capsys.readouterr().err
