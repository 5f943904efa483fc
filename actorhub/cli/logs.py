"""`actorhub logs`: the output of a cluster's workers, read from the session's log files.

Every worker's stdout and stderr are files in `<session>/logs/` (`worker-<id>.out|.err`),
with marker lines that say whose lines follow (`runtime/log_markers.py`). This prints their
lines as a driver shows them, `(Counter pid=1234) ...`, markers hidden, file by file (oldest
worker first), and with `--follow` goes on printing what they append, new workers included.

It reads files, so it needs no running cluster (the files outlive it) and shows only the
nodes whose session directory is on this host: a node on another machine keeps its files
there, where `actorhub logs` run on that machine reads them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from actorhub.cli.common import CliError, sessions
from actorhub.cluster.discovery import newest_running
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.node.log_files import LogFileTail, worker_files
from actorhub.runtime.log_markers import line_prefix
from actorhub.wire.records import LogLines

FOLLOW_PERIOD_S = 0.2

HELP = (
    "print the output of the workers of the latest cluster on this machine, from its log files "
    "(a node on another machine keeps its files there: run `actorhub logs` on that machine)"
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("logs", help=HELP, description=HELP)
    parser.add_argument("--actor", metavar="NAME|ID",
                        help="only this actor's lines: its id, its name, or its class's name")
    parser.add_argument("--node", metavar="ID", help="only the lines of this node's workers (an id or its start)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing what the workers write")
    parser.add_argument("--session", type=Path, metavar="DIR",
                        help="the session directory (default: the newest running cluster's, else the newest)")


def logs_command(actor: str | None, node: str | None, follow: bool, session_dir: Path | None) -> int:
    logs_dir = _session(session_dir).path / "logs"
    reader = _Reader(logs_dir, actor, node)
    reader.poll(final=not follow)
    while follow:
        time.sleep(FOLLOW_PERIOD_S)
        reader.poll(final=False)
    return 0


def _session(given: Path | None) -> Session:
    if given is not None:
        if not (given / "logs").is_dir():
            raise CliError(f"--session {given}: not a session directory (it has no logs/ folder)")
        return Session(given)
    root = Config.load().session_root
    found = newest_running(root)
    if found is None:
        made = sessions(root)
        if not made:
            raise CliError(f"no session under {root}: no cluster has run on this machine")
        found = made[-1]
    return found


class _Reader:
    def __init__(self, logs_dir: Path, actor: str | None, node: str | None) -> None:
        self._logs_dir = logs_dir
        self._actor = actor
        self._node = node
        self._tails: dict[Path, LogFileTail] = {}

    def poll(self, *, final: bool) -> None:
        for path in worker_files(self._logs_dir):
            if path not in self._tails:
                tail = LogFileTail.of(path)
                if tail is None:
                    continue
                self._tails[path] = tail
        out: list[str] = []
        for tail in self._tails.values():
            if not (tail.unread() or tail.waiting or final):
                continue
            while True:  # to the end: a read takes at most a MiB
                out += [f"{line_prefix(c.name, c.pid)} {line}" for c in tail.read(final=final)
                        if self._wanted(tail, c) for line in c.lines]
                if not tail.unread():
                    break
        if out:
            sys.stdout.write("".join(f"{line}\n" for line in out))
            sys.stdout.flush()

    def _wanted(self, tail: LogFileTail, chunk: LogLines) -> bool:
        if self._node is not None and not tail.attribution.node_id.startswith(self._node):
            return False
        if self._actor is not None:
            return self._actor in (chunk.actor_id, chunk.actor_label) or (
                bool(chunk.actor_id) and chunk.name == self._actor)
        return True
