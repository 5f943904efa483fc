"""The dashboard's job records, in a small SQLite file in the session directory.

A record is the job's `JobDetails` plus what the dashboard needs to find its process again: the
entrypoint's pid, that process's start time (so a reused pid is never taken for it), and whether
a stop was asked for. Written on every change of state, so a dashboard that is killed and
restarted (`dashboard/supervisor.py`) serves the same jobs and adopts the ones still running.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from actorhub.job_submission.models import JobDetails

STORE_FILE = "jobs.sqlite3"


@dataclass
class JobProcess:
    """The entrypoint's process, once started (its process group has the same id)."""

    pid: int = 0
    start_ticks: int = 0
    """Its start time in clock ticks since boot (/proc/PID/stat field 22)."""
    stop_requested: bool = False


@dataclass
class JobRecord:
    details: JobDetails
    process: JobProcess = field(default_factory=JobProcess)

    @property
    def submission_id(self) -> str:
        return self.details.submission_id


class JobStore:
    """Records by submission id, in submission order. Used from the dashboard's event loop;
    each write is one short transaction."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, submission_id TEXT UNIQUE, "
            "details TEXT NOT NULL, process TEXT NOT NULL)"
        )

    def load(self) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute("SELECT details, process FROM jobs ORDER BY seq").fetchall()
        return [JobRecord(JobDetails.model_validate_json(details), JobProcess(**json.loads(process)))
                for details, process in rows]

    def save(self, record: JobRecord) -> None:
        details = record.details.model_dump_json()
        process = json.dumps(asdict(record.process))
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (submission_id, details, process) VALUES (?, ?, ?) "
                "ON CONFLICT(submission_id) DO UPDATE SET details = excluded.details, process = excluded.process",
                (record.submission_id, details, process),
            )

    def delete(self, submission_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE submission_id = ?", (submission_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
