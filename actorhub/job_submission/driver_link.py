"""What a driver and its cluster's dashboard tell each other through the session directory.

`init()` in a process that the dashboard started for a submission (ACTORHUB_JOB_SUBMISSION_ID)
writes its job id into the session's `jobs/` directory, where the dashboard reads it for
`JobDetails.job_id`; and it learns the dashboard's address (`ClusterContext.dashboard_url`) from
the session's `dashboard_address`."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

SUBMISSION_ID_VARIABLE = "ACTORHUB_JOB_SUBMISSION_ID"
JOBS_DIR = "jobs"
DASHBOARD_ADDRESS_FILE = "dashboard_address"  # written by the dashboard (`dashboard/server.py`)
# Submission ids name files: letters, digits and . _ - only (checked by the dashboard at submission).
SUBMISSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def job_id_file(session_dir: Path, submission_id: str) -> Path:
    return session_dir / JOBS_DIR / f"{submission_id}.job_id"


def note_driver(session_dir: Path, job_id: str, environ: Mapping[str, str]) -> None:
    """Record `job_id` for the submission this process runs, if it runs one (best effort: a
    driver never fails for it)."""
    submission_id = environ.get(SUBMISSION_ID_VARIABLE, "")
    if not SUBMISSION_ID_PATTERN.fullmatch(submission_id):
        return
    path = job_id_file(session_dir, submission_id)
    with contextlib.suppress(OSError):
        if path.parent.is_dir():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(job_id)
            tmp.replace(path)


def read_driver_job_id(session_dir: Path, submission_id: str) -> str | None:
    try:
        return job_id_file(session_dir, submission_id).read_text().strip() or None
    except OSError:
        return None


def driver_joined(session_dir: Path, job_id: str, url: str | None, environ: Mapping[str, str]) -> str | None:
    """For init(): note a submitted job's driver, and return the dashboard's HOST:PORT (`url`, or
    the session's address file; None when the cluster runs no dashboard)."""
    if environ.get(SUBMISSION_ID_VARIABLE):
        note_driver(session_dir, job_id, environ)
    if url is None:
        try:
            url = (session_dir / DASHBOARD_ADDRESS_FILE).read_text().strip() or None
        except OSError:
            return None
    return url.removeprefix("http://") if url else None
