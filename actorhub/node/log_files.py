"""Reading workers' output files: complete lines, attributed by the marker lines in them.

A worker's stdout and stderr go to `logs/worker-<id>.out|.err` (the zygote redirects the file
descriptors, so the output of C code and subprocesses lands there too). The worker writes
marker lines (`runtime/log_markers.py`) that say which node and process the file is of and
which job and actor or task the lines after them belong to. `LogFileTail` follows one file
from its start and turns what was appended since the last read into `LogLines`, markers
applied and removed. The node's log monitor (`log_monitor.py`) and `actorhub logs` both use it.

Plain files and the standard library only: `actorhub logs` reads them without a cluster.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from actorhub.runtime import log_markers
from actorhub.wire.records import LogLines

WORKER_FILE = re.compile(r"^worker-([0-9a-f]+)\.(out|err)$")
# A line longer than this is passed on in pieces, so a stream without line ends cannot grow a buffer.
MAX_LINE_BYTES = 64 * 1024
# A last line without its end is passed on once it has waited this long (a prompt, a progress bar).
PARTIAL_LINE_WAIT_S = 1.0


@dataclass
class Attribution:
    """What the markers read so far say."""

    node_id: str = ""
    pid: int = 0
    job_id: str = ""
    name: str = ""
    actor_id: str = ""
    actor_label: str = ""
    seen_first_line: bool = False

    def apply(self, line: str) -> None:
        for prefix in log_markers.PREFIXES:
            if line.startswith(prefix):
                value = line[len(prefix):]
                break
        else:
            return
        if prefix == log_markers.NODE_ID:
            self.node_id = value
        elif prefix == log_markers.PID:
            self.pid = int(value) if value.isdigit() else 0
        elif prefix == log_markers.JOB_ID:
            self.job_id = value
        elif prefix == log_markers.ACTOR_ID:
            self.actor_id, self.actor_label = value, ""
        elif prefix == log_markers.ACTOR_NAME:
            self.name = value
        elif prefix == log_markers.NAME:
            self.actor_label = value
        elif prefix == log_markers.TASK_NAME:
            self.name, self.actor_id, self.actor_label = value, "", ""


@dataclass
class LogFileTail:
    """One worker output file, read from its start, a bit more at each `read()`."""

    path: Path
    is_stderr: bool
    offset: int = 0
    attribution: Attribution = field(default_factory=Attribution)
    _partial: bytes = b""
    _partial_since: float = 0.0

    @classmethod
    def of(cls, path: Path) -> LogFileTail | None:
        """A tail for a worker output file's path; None for any other file."""
        found = WORKER_FILE.match(path.name)
        return cls(path, found.group(2) == "err") if found else None

    @property
    def worker_id(self) -> str:
        return self.path.name.split("-", 1)[1].rsplit(".", 1)[0]

    @property
    def foreign(self) -> bool:
        """The file does not start with a worker's node marker (a child entry of a test's own)."""
        return self.attribution.seen_first_line and not self.attribution.node_id

    def unread(self) -> bool:
        """Whether the file has bytes this tail has not read (one stat)."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return False
        if size < self.offset:  # truncated by hand: start again from its start
            self.offset, self._partial = 0, b""
        return size > self.offset

    def read(self, max_bytes: int = 1 << 20, *, final: bool = False) -> list[LogLines]:
        """The lines appended since the last read (at most about `max_bytes`), in chunks of one
        attribution. `final`: the writer is gone, so a last line without its end is complete."""
        data = b""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(max_bytes)
        except OSError:
            pass
        self.offset += len(data)
        now = time.monotonic()
        pieces = (self._partial + data).split(b"\n")
        rest = pieces.pop()
        if rest and (not self._partial or b"\n" in data):
            self._partial_since = now  # a new unfinished line
        if rest and (final or now - self._partial_since >= PARTIAL_LINE_WAIT_S or len(rest) > MAX_LINE_BYTES):
            pieces.append(rest)
            rest = b""
        self._partial = rest
        return self._chunks(pieces)

    @property
    def waiting(self) -> bool:
        """An unfinished last line is held back (a later read passes it on, once it waited enough)."""
        return bool(self._partial)

    def _chunks(self, pieces: list[bytes]) -> list[LogLines]:
        chunks: list[LogLines] = []
        lines: list[str] = []
        state = self.attribution
        for piece in pieces:
            line = piece.decode("utf-8", "replace").removesuffix("\r")
            first = not state.seen_first_line
            state.seen_first_line = True
            if log_markers.is_marker(line):
                if lines:
                    chunks.append(self._chunk(lines))
                    lines = []
                state.apply(line)
                continue
            if first:
                continue  # a file that starts without a node marker is not a worker's (foreign)
            if not self.foreign:
                lines.append(line)
        if lines:
            chunks.append(self._chunk(lines))
        return chunks

    def _chunk(self, lines: list[str]) -> LogLines:
        a = self.attribution
        return LogLines(job_id=a.job_id, pid=a.pid, name=a.name, is_stderr=self.is_stderr, lines=tuple(lines),
                        actor_id=a.actor_id, actor_label=a.actor_label)


def worker_files(logs_dir: Path) -> list[Path]:
    """The worker output files in `logs_dir`, oldest first."""
    try:
        entries = list(os.scandir(logs_dir))
    except OSError:
        return []
    found = [(e.stat().st_mtime, Path(e.path)) for e in entries if WORKER_FILE.match(e.name)]
    return [path for _, path in sorted(found)]

