"""Ray's Job API (`ray.job_submission`): submit a shell command to run as a job on the cluster's
head, over HTTP to the dashboard (`actorhub/dashboard/`), and follow its status and logs.

    from actorhub.job_submission import JobSubmissionClient, JobStatus
"""

from typing import Any

__all__ = ["JobDetails", "JobInfo", "JobStatus", "JobSubmissionClient", "JobType"]


def __getattr__(name: str) -> Any:
    # Lazily: `import actorhub.job_submission` stays cheap, and package __init__ files import nothing.
    if name == "JobSubmissionClient":
        from actorhub.job_submission.client import JobSubmissionClient

        return JobSubmissionClient
    if name in ("JobDetails", "JobInfo", "JobStatus", "JobType"):
        from actorhub.job_submission import models

        return getattr(models, name)
    raise AttributeError(f"module 'actorhub.job_submission' has no attribute {name!r}")
