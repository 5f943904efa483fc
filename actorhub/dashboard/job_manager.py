"""Running submitted jobs: Ray's JobManager and JobSupervisor, in the dashboard process.

A job's entrypoint is a shell command run on the head as a driver of the cluster, in its
runtime_env (`job_env.py`). It leads a process group of its own (`start_new_session`), so a stop
reaches everything it started: SIGTERM to the group, SIGKILL `stop_grace_s` later to whatever is
left. When the entrypoint's shell ends, what it left in its group is ended the same way, so a
job never leaves processes behind. Its stdout and stderr go to `logs/job-driver-<id>.log`.

The entrypoint runs under a small shell wrapper that writes its exit code to `jobs/<id>.exit`:
the job does not die with the dashboard, and a dashboard restarted after a crash adopts the jobs
still running (their pid and start time are in the job store) and learns how the others ended
from that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import string
import subprocess
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from actorhub.dashboard.job_env import EntrypointEnvs, RuntimeEnvRequestError, check_request_env
from actorhub.dashboard.job_store import JobProcess, JobRecord, JobStore
from actorhub.job_submission.driver_link import JOBS_DIR, SUBMISSION_ID_PATTERN, read_driver_job_id
from actorhub.job_submission.models import JobDetails, JobStatus
from actorhub.runtime_env.spec import RuntimeEnvSpec

log = logging.getLogger("actorhub.dashboard")

# $1: the entrypoint, $2: where its exit code goes. The inner shell runs the command as Ray's
# JobSupervisor does (`shell=True`); the outer one outlives it to record how it ended.
_WRAPPER = 'sh -c "$1"; code=$?; echo "$code" > "$2"; exit "$code"'
_LOG_TAIL_CHARS = 20_000
_ADOPTED_POLL_S = 0.25
_ID_ALPHABET = string.ascii_letters + string.digits


class JobRequestError(ValueError):
    """A request the Job API refuses (HTTP 400); the message says why."""


class JobNotFoundError(LookupError):
    """No job has that submission id (HTTP 404)."""


def new_submission_id() -> str:
    return "actorhubsubmit_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _start_ticks(pid: int) -> int:
    """The process's start time (clock ticks since boot); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return 0 if fields[0] == "Z" else int(fields[19])


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the process group: a zombie reparented to
    init is not ours to wait for, and counts as ended."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class JobManager:
    """Every job of the session. Runs on the dashboard's event loop."""

    def __init__(self, session_dir: Path, store: JobStore, envs: EntrypointEnvs, base_environ: Mapping[str, str],
                 stop_grace_s: float = 3.0, node_id: str | None = None) -> None:
        self._session_dir = session_dir
        self._store = store
        self._envs = envs
        self._base_environ = dict(base_environ)
        self._stop_grace_s = stop_grace_s
        self._node_id = node_id  # the head's node: entrypoints run there
        self._jobs: dict[str, JobRecord] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        (session_dir / JOBS_DIR).mkdir(mode=0o700, exist_ok=True)

    # -- paths --------------------------------------------------------------------------------
    def log_path(self, submission_id: str) -> Path:
        return self._session_dir / "logs" / f"job-driver-{submission_id}.log"

    def _exit_path(self, submission_id: str) -> Path:
        return self._session_dir / JOBS_DIR / f"{submission_id}.exit"

    # -- reading ------------------------------------------------------------------------------
    def get(self, submission_id: str) -> JobDetails:
        record = self._jobs.get(submission_id)
        if record is None:
            raise JobNotFoundError(f"job {submission_id!r} does not exist")
        if record.details.job_id is None and record.details.status != JobStatus.PENDING:
            job_id = read_driver_job_id(self._session_dir, submission_id)
            if job_id is not None:
                self._update(record, job_id=job_id)
        return record.details

    def list_jobs(self) -> list[JobDetails]:
        return [self.get(submission_id) for submission_id in list(self._jobs)]

    def _running(self) -> list[JobRecord]:
        return [r for r in self._jobs.values() if not r.details.status.is_terminal()]

    # -- changes ------------------------------------------------------------------------------
    def _update(self, record: JobRecord, **changes: object) -> None:
        record.details = record.details.model_copy(update=changes)
        self._store.save(record)

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Load the stored jobs; adopt those whose entrypoint still runs."""
        for record in self._store.load():
            self._jobs[record.submission_id] = record
            status = record.details.status
            if status.is_terminal():
                continue
            if status == JobStatus.PENDING:
                self._finish(record, None, "the dashboard restarted while the job's runtime_env was being prepared")
                continue
            pid = record.process.pid
            if pid and _start_ticks(pid) == record.process.start_ticks:
                log.info("adopting job %s (pid %d)", record.submission_id, pid)
                self._spawn_task(self._watch_adopted(record))
            else:
                self._finish(record, self._read_exit_code(record.submission_id),
                             "the entrypoint ended while the dashboard was down")

    def submit(self, *, entrypoint: str, submission_id: str | None, runtime_env: object,
               metadata: dict[str, str] | None, resources: dict[str, object]) -> str:
        if not entrypoint.strip():
            raise JobRequestError("entrypoint is empty: give the shell command to run")
        if submission_id is None:
            submission_id = new_submission_id()
        elif not SUBMISSION_ID_PATTERN.fullmatch(submission_id):
            raise JobRequestError(f"submission_id {submission_id!r}: use 1 to 128 letters, digits, '.', '_' or '-', "
                                  "starting with a letter or digit")
        if submission_id in self._jobs:
            raise JobRequestError(f"a job with submission_id {submission_id!r} already exists")
        for name, value in resources.items():
            if value:
                raise JobRequestError(f"{name}={value!r}: actorhub does not reserve resources for an entrypoint "
                                      "(it runs on the head beside the cluster's workers); leave it unset")
        try:
            spec = check_request_env(runtime_env)
        except RuntimeEnvRequestError as e:
            raise JobRequestError(str(e)) from None
        details = JobDetails(submission_id=submission_id, status=JobStatus.PENDING, entrypoint=entrypoint,
                             message="Job has not started yet.", start_time=_now_ms(), metadata=metadata or {},
                             runtime_env=spec.as_dict() if spec is not None else {})
        record = JobRecord(details)
        self._jobs[submission_id] = record
        self._store.save(record)
        self._spawn_task(self._run(record, spec))
        return submission_id

    async def _run(self, record: JobRecord, spec: RuntimeEnvSpec | None) -> None:
        submission_id = record.submission_id
        try:
            env = await self._envs.prepare(spec, submission_id, self._base_environ)
        except Exception as e:
            self._update(record, status=JobStatus.FAILED, error_type="RUNTIME_ENV_SETUP_FAILED", end_time=_now_ms(),
                         message=f"The runtime_env could not be set up: {e}")
            return
        if record.details.status.is_terminal():  # stopped while its env was prepared
            return
        exit_path = self._exit_path(submission_id)
        exit_path.unlink(missing_ok=True)
        try:
            with open(self.log_path(submission_id), "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", _WRAPPER, "sh", record.details.entrypoint, str(exit_path),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=env.cwd, env=env.environ,
                    start_new_session=True,
                )
        except OSError as e:
            self._update(record, status=JobStatus.FAILED, error_type="ENTRYPOINT_START_FAILED", end_time=_now_ms(),
                         message=f"The entrypoint could not be started: {e}")
            return
        record.process = JobProcess(pid=proc.pid, start_ticks=_start_ticks(proc.pid),
                                    stop_requested=record.process.stop_requested)
        if record.process.stop_requested:  # stopped (and so STOPPED) while it was being spawned
            _signal_group(proc.pid, signal.SIGTERM)
            self._store.save(record)
        else:
            self._update(record, status=JobStatus.RUNNING, message="Job is currently running.",
                         driver_node_id=self._node_id)
        code = await proc.wait()
        await self._end_group(proc.pid)
        if not record.details.status.is_terminal():
            self._finish(record, code, "")

    async def _watch_adopted(self, record: JobRecord) -> None:
        """A job started by an earlier dashboard process: not our child, so watched by pid."""
        pid = record.process.pid
        while _start_ticks(pid) == record.process.start_ticks:
            await asyncio.sleep(_ADOPTED_POLL_S)
        await self._end_group(pid)
        self._finish(record, self._read_exit_code(record.submission_id), "")

    def _read_exit_code(self, submission_id: str) -> int | None:
        try:
            return int(self._exit_path(submission_id).read_text().strip())
        except (OSError, ValueError):
            return None

    async def _end_group(self, pgid: int) -> None:
        """End what is left of the job's process group: SIGTERM, then SIGKILL after the grace."""
        if not _group_alive(pgid):
            return
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        while _group_alive(pgid):
            await asyncio.sleep(0.02)

    def _finish(self, record: JobRecord, code: int | None, why: str) -> None:
        """The job's terminal state, from how its entrypoint ended (`code`: the wrapper's exit
        status, negative for a signal; None when unknown) and `why`, for an ending we caused."""
        end = _now_ms()
        if record.process.stop_requested:
            self._update(record, status=JobStatus.STOPPED, end_time=end, driver_exit_code=code,
                         message="Job was intentionally stopped.")
        elif code == 0:
            self._update(record, status=JobStatus.SUCCEEDED, end_time=end, driver_exit_code=0,
                         message="Job finished successfully.")
        elif code is None:
            self._update(record, status=JobStatus.FAILED, end_time=end, error_type="JOB_SUPERVISOR_LOST",
                         message=f"Job failed: {why or 'its exit code is unknown'}.")
        else:
            self._update(record, status=JobStatus.FAILED, end_time=end, driver_exit_code=code,
                         error_type="ENTRYPOINT_FAILED",
                         message=f"{_describe_exit(code)}; last available logs (truncated to "
                                 f"{_LOG_TAIL_CHARS:,} chars):\n{self.log_tail(record.submission_id)}")

    def log_tail(self, submission_id: str) -> str:
        """The end of a job's log, for its failure message."""
        path = self.log_path(submission_id)
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - _LOG_TAIL_CHARS))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    async def stop(self, submission_id: str) -> bool:
        """Ask the job to stop; False when it has ended already (as Ray's stop_job)."""
        self.get(submission_id)
        record = self._jobs[submission_id]
        if record.details.status.is_terminal():
            return False
        record.process.stop_requested = True
        self._store.save(record)
        if record.process.pid:
            _signal_group(record.process.pid, signal.SIGTERM)
        else:  # PENDING: nothing runs yet, and nothing will
            self._finish(record, None, "")
        return True

    def delete(self, submission_id: str) -> bool:
        """Forget an ended job and its log; a job that has not ended is refused."""
        details = self.get(submission_id)
        if not details.status.is_terminal():
            raise JobRequestError(f"job {submission_id!r} is {details.status.value}: only a job that has ended "
                                  "(SUCCEEDED, FAILED or STOPPED) can be deleted; stop it first")
        del self._jobs[submission_id]
        self._store.delete(submission_id)
        for path in (self.log_path(submission_id), self._exit_path(submission_id)):
            path.unlink(missing_ok=True)
        (self._session_dir / JOBS_DIR / f"{submission_id}.job_id").unlink(missing_ok=True)
        return True

    def detach(self) -> None:
        """Leave the jobs running, unwatched (a later dashboard process adopts them)."""
        self._store.close()

    async def close(self) -> None:
        """The cluster is going away: stop every job that runs (their groups end), wait for them."""
        for record in self._running():
            with contextlib.suppress(JobNotFoundError):
                await self.stop(record.submission_id)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._stop_grace_s + 5.0)
        self._store.close()


def _describe_exit(code: int) -> str:
    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"Job entrypoint was killed by {name} (exit code {code})"
    return f"Job entrypoint command failed with exit code {code}"
