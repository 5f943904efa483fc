"""What the Job API says about a job: Ray's `JobStatus`, `JobType` and `JobDetails`.

Shared by the dashboard (which keeps and serves them) and the client (which reads them back),
so both agree on every field. Times are milliseconds since the epoch, as in Ray.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class JobStatus(StrEnum):
    """A submitted job's state. PENDING until its entrypoint starts (its runtime_env is being
    prepared), RUNNING until it ends; the last three are terminal."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED})


class JobType(StrEnum):
    """How a job came to be; jobs of the Job API are SUBMISSION."""

    SUBMISSION = "SUBMISSION"
    DRIVER = "DRIVER"


class JobDetails(BaseModel):
    """One submitted job, as `GET /api/jobs/{id}` answers and `get_job_info` returns it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: JobType = JobType.SUBMISSION
    job_id: str | None = None
    """The cluster's id of the job's driver, once it has connected (None before, or for an
    entrypoint that never calls init())."""
    submission_id: str
    status: JobStatus
    entrypoint: str
    message: str | None = None
    error_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None


# Ray has both names for what `get_job_info` returns; here they are one model.
JobInfo = JobDetails
