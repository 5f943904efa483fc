"""The Job API (issue 13): the head's dashboard serves Ray's Job REST API; jobs run as supervised
entrypoints on the head; `JobSubmissionClient` and `actorhub job` drive it.

One head for the module, started as users start it (`actorhub start --head`), with its dashboard
on a free port (never 8265: test runs go side by side).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _drivers import REPO
from _procs import gone
from _wait import wait_for

from actorhub.exceptions import JobSubmissionError, OptionsError
from actorhub.job_submission import JobDetails, JobStatus, JobSubmissionClient

CLI = [sys.executable, "-m", "actorhub.cli"]


@dataclass(frozen=True)
class Head:
    url: str
    session: Path
    token: str
    node_id: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=env)


def _own_root(tmp_path: Path) -> dict[str, str]:
    """An environment whose session root is not the module head's: its clusters are its own."""
    root = tmp_path / "sessions"
    root.mkdir(mode=0o700)
    return {**os.environ, "ACTORHUB_SESSION_ROOT": str(root)}


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies, which init reaps in its own time, left out)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def _pids_of(session: Path) -> set[int]:
    return {int(p.read_text()) for p in session.glob("*.pid")}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory, allowed_process_roots: set[int]) -> Iterator[Head]:
    root = tmp_path_factory.mktemp("job-sessions")
    old = os.environ.get("ACTORHUB_SESSION_ROOT")
    os.environ["ACTORHUB_SESSION_ROOT"] = str(root)
    port = _free_port()
    started = _cli("start", "--head", "--num-cpus", "2", "--dashboard-port", str(port))
    roots: set[int] = set()
    try:
        assert started.returncode == 0, started.stderr
        assert f"dashboard:    http://127.0.0.1:{port}" in started.stdout, started.stdout
        session = Path(re.search(r"session dir:\s+(\S+)", started.stdout).group(1))  # type: ignore[union-attr]
        roots = _pids_of(session)
        allowed_process_roots.update(roots)
        node_id = re.search(r"node id:\s+(\S+)", started.stdout).group(1)  # type: ignore[union-attr]
        yield Head(f"http://127.0.0.1:{port}", session, (session / "token").read_text().strip(), node_id)
    finally:
        _cli("stop")
        allowed_process_roots.difference_update(roots)
        if old is None:
            os.environ.pop("ACTORHUB_SESSION_ROOT", None)
        else:
            os.environ["ACTORHUB_SESSION_ROOT"] = old


@pytest.fixture
def client(head: Head) -> Iterator[JobSubmissionClient]:
    with JobSubmissionClient() as found:  # no address: this machine's cluster, and its token
        assert found.address == head.url
        yield found


def wait_until_ended(client: JobSubmissionClient, job_id: str, timeout: float = 60.0) -> JobDetails:
    wait_for(lambda: client.get_job_status(job_id).is_terminal(), f"job {job_id} to end", timeout)
    return client.get_job_info(job_id)


def wait_for_log(client: JobSubmissionClient, job_id: str, pattern: str) -> re.Match[str]:
    return wait_for(lambda: re.search(pattern, client.get_job_logs(job_id)), f"{pattern!r} in the logs of {job_id}", 60)


ACTOR_SCRIPT = """
import os, actorhub as ray
print("driver sees", os.environ.get("GREETING"), flush=True)
ray.init()

@ray.remote
class Reader:
    def read(self):
        with open("data.txt") as f:  # relative: the actor's cwd is the job's working_dir
            return f.read().strip(), os.environ.get("GREETING")

print("actor read", ray.get(Reader.remote().read.remote()))
"""


def test_a_job_with_an_actor_runs_in_its_working_dir_and_env(client: JobSubmissionClient, head: Head,
                                                             tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(ACTOR_SCRIPT)
    (tmp_path / "data.txt").write_text("from the working dir\n")
    job_id = client.submit_job(entrypoint="python job.py", metadata={"owner": "tests"},
                               runtime_env={"working_dir": str(tmp_path), "env_vars": {"GREETING": "hello"}})
    info = wait_until_ended(client, job_id)
    logs = client.get_job_logs(job_id)
    assert info.status == JobStatus.SUCCEEDED, logs
    assert "driver sees hello" in logs
    assert "actor read ('from the working dir', 'hello')" in logs
    assert info.driver_exit_code == 0 and info.message == "Job finished successfully."
    assert info.metadata == {"owner": "tests"}
    assert info.runtime_env is not None and info.runtime_env["working_dir"].startswith("hub://")
    assert info.start_time is not None and info.end_time is not None and info.start_time <= info.end_time
    assert info.job_id is not None and re.fullmatch(r"[0-9a-f]+", info.job_id)  # the driver's own job
    assert info.driver_node_id == head.node_id
    assert client.get_job_status(job_id) is JobStatus.SUCCEEDED


def test_a_failing_entrypoint_fails_with_its_exit_code(client: JobSubmissionClient) -> None:
    job_id = client.submit_job(entrypoint="""python -c "import sys; print('about to fail'); sys.exit(3)" """)
    info = wait_until_ended(client, job_id)
    assert info.status == JobStatus.FAILED
    assert info.driver_exit_code == 3
    assert info.message is not None and "exit code 3" in info.message and "about to fail" in info.message


SLEEPER = """python -c "import os, time; print('pid', os.getpid(), flush=True); time.sleep(300)" """


def test_stop_ends_the_job_and_every_process_of_it(client: JobSubmissionClient) -> None:
    # A child in the background too: a stop reaches the whole process group.
    job_id = client.submit_job(entrypoint=f"sleep 300 & {SLEEPER}")
    pid = int(wait_for_log(client, job_id, r"pid (\d+)").group(1))
    assert client.get_job_status(job_id) == JobStatus.RUNNING
    pgid = os.getpgid(pid)
    assert client.stop_job(job_id) is True
    info = wait_until_ended(client, job_id)
    assert info.status == JobStatus.STOPPED and info.message == "Job was intentionally stopped."
    assert gone(pid)
    assert not _group_members(pgid)
    assert client.stop_job(job_id) is False  # it has ended already


def test_a_sigkilled_driver_fails_its_job(client: JobSubmissionClient) -> None:
    job_id = client.submit_job(entrypoint=SLEEPER)
    pid = int(wait_for_log(client, job_id, r"pid (\d+)").group(1))
    os.kill(pid, signal.SIGKILL)
    info = wait_until_ended(client, job_id)
    assert info.status == JobStatus.FAILED
    assert info.driver_exit_code in (137, -9)
    assert info.message is not None and "SIGKILL" in info.message


def test_requests_need_the_cluster_token(head: Head) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {head.token}"}):
        for method, path in (("GET", "/api/jobs/"), ("POST", "/api/jobs/"), ("GET", "/api/version")):
            reply = httpx.request(method, head.url + path, headers=headers, json={"entrypoint": "echo x"})
            assert reply.status_code == 401, (headers, path)
            assert "token" in reply.json()["error"]
    reply = httpx.get(head.url + "/api/version", headers={"Authorization": f"Bearer {head.token}"})
    assert reply.status_code == 200 and reply.json()["version"]
    with pytest.raises(JobSubmissionError, match=r"401.*not this cluster's token") as refused:
        JobSubmissionClient(head.url, headers={"Authorization": "Bearer wrong"})
    assert refused.value.status == 401
    # Ray's headers= carry the token when the client finds none by itself (a dashboard on another host).
    with JobSubmissionClient(head.url, headers={"Authorization": f"Bearer {head.token}"}) as explicit:
        assert isinstance(explicit.list_jobs(), list)


def test_bad_requests_are_refused_by_name(client: JobSubmissionClient, head: Head, tmp_path: Path) -> None:
    with pytest.raises(JobSubmissionError, match=r"404.*'no-such-job' does not exist"):
        client.get_job_info("no-such-job")
    with pytest.raises(JobSubmissionError, match="404"):
        client.stop_job("no-such-job")
    with pytest.raises(OptionsError, match="conda"):
        client.submit_job(entrypoint="echo x", runtime_env={"conda": "env.yaml"})
    with pytest.raises(OptionsError, match=r"working_dir.*not an existing directory"):
        client.submit_job(entrypoint="echo x", runtime_env={"working_dir": str(tmp_path / "missing")})
    with pytest.raises(OptionsError, match="entrypoint"):
        client.submit_job(entrypoint="  ")
    with pytest.raises(JobSubmissionError, match="entrypoint_num_cpus"):
        client.submit_job(entrypoint="echo x", entrypoint_num_cpus=1)
    job_id = client.submit_job(entrypoint="echo x", submission_id="fixed-id")
    with pytest.raises(JobSubmissionError, match=r"400.*'fixed-id' already exists"):
        client.submit_job(entrypoint="echo x", submission_id="fixed-id")
    assert job_id == "fixed-id"
    auth = {"Authorization": f"Bearer {head.token}"}
    for body, error in (({}, "entrypoint is required"), ({"entrypoint": "x", "runtime_env": {"working_dir": "/tmp"}},
                        "local path"), ({"entrypoint": "x", "extra": 1}, "unknown field"),
                        ({"entrypoint": "x", "submission_id": "../x"}, "submission_id"),
                        ({"entrypoint": "x", "runtime_env": {"pip": "no-such-file.txt"}}, "pip")):
        reply = httpx.post(head.url + "/api/jobs/", json=body, headers=auth)
        assert reply.status_code == 400 and error in reply.json()["error"], (body, reply.text)
    reply = httpx.post(head.url + "/api/jobs/", content=b"{not json", headers=auth)
    assert reply.status_code == 400 and "not JSON" in reply.json()["error"]


def test_list_and_delete(client: JobSubmissionClient) -> None:
    running = client.submit_job(entrypoint="sleep 300")
    done = client.submit_job(entrypoint="echo done")
    wait_until_ended(client, done)
    listed = {info.submission_id: info.status for info in client.list_jobs()}
    assert listed[done] == JobStatus.SUCCEEDED and listed[running] in (JobStatus.PENDING, JobStatus.RUNNING)
    with pytest.raises(JobSubmissionError, match=r"400.*stop it first"):
        client.delete_job(running)
    assert client.delete_job(done) is True
    with pytest.raises(JobSubmissionError, match="404"):
        client.get_job_info(done)
    assert done not in {info.submission_id for info in client.list_jobs()}
    client.stop_job(running)
    assert wait_until_ended(client, running).status == JobStatus.STOPPED


def test_tail_job_logs_streams_lines_as_they_come(client: JobSubmissionClient, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job_id = client.submit_job(
        entrypoint=f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second")

    async def follow() -> str:
        seen = ""
        async for chunk in client.tail_job_logs(job_id):
            seen += chunk
            if "first" in seen and not go.exists():
                # The job waits for this file: "first" came while the job ran.
                assert client.get_job_status(job_id) == JobStatus.RUNNING
                go.touch()
        return seen

    text = asyncio.run(asyncio.wait_for(follow(), 60))
    assert text.splitlines() == ["first", "second"]
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED


def test_the_cli(head: Head, tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("import os\nprint('hello from', os.environ['WHO'])\n")
    submitted = _cli("job", "submit", "--working-dir", str(tmp_path), "--runtime-env-json",
                     '{"env_vars": {"WHO": "the cli"}}', "--submission-id", "cli-job", "--", "python", "hello.py")
    assert submitted.returncode == 0, submitted.stderr
    assert "Job 'cli-job' submitted successfully" in submitted.stdout
    assert "hello from the cli" in submitted.stdout and "Job 'cli-job' succeeded" in submitted.stdout
    status = _cli("job", "status", "cli-job")
    assert status.returncode == 0 and "Status for job 'cli-job': SUCCEEDED" in status.stdout
    logs = _cli("job", "logs", "cli-job")
    assert logs.stdout.splitlines()[-1] == "hello from the cli"
    listed = _cli("job", "list", "--address", head.url)
    assert re.search(r"cli-job\s+SUCCEEDED", listed.stdout), listed.stdout
    failed = _cli("job", "submit", "--", "exit 5")
    assert failed.returncode == 1 and "failed" in failed.stdout
    background = _cli("job", "submit", "--no-wait", "--submission-id", "cli-sleep", "--", "sleep", "300")
    assert background.returncode == 0 and "Tailing" not in background.stdout
    stopped = _cli("job", "stop", "cli-sleep")
    assert stopped.returncode == 0 and "has exited with status STOPPED" in stopped.stdout, stopped
    follow = _cli("job", "logs", "-f", "cli-job")
    assert follow.returncode == 0 and "hello from the cli" in follow.stdout
    missing = _cli("job", "status", "nope")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "'nope' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_entrypoint = _cli("job", "submit")
    assert no_entrypoint.returncode == 1 and "no entrypoint" in no_entrypoint.stderr


def test_jobs_survive_a_sigkilled_dashboard(client: JobSubmissionClient, head: Head) -> None:
    finished = client.submit_job(entrypoint="echo kept")
    wait_until_ended(client, finished)
    running = client.submit_job(entrypoint=SLEEPER)
    pid = int(wait_for_log(client, running, r"pid (\d+)").group(1))
    server = int((head.session / "dashboard.pid").read_text())
    os.kill(server, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return int((head.session / "dashboard.pid").read_text()) != server and bool(client.list_jobs())
        except (OSError, ValueError, JobSubmissionError):
            return False

    wait_for(restarted, "the dashboard's supervisor to restart it", 60)
    assert client.get_job_info(finished).status == JobStatus.SUCCEEDED
    assert client.get_job_logs(finished) == "kept\n"
    assert client.get_job_status(running) == JobStatus.RUNNING and not gone(pid)  # adopted, not restarted
    assert client.stop_job(running)
    assert wait_until_ended(client, running).status == JobStatus.STOPPED
    assert gone(pid)


@pytest.mark.network
def test_the_seeds_job_example(head: Head) -> None:
    """examples/job_submission/submit.py: the seed's client, its working_dir, env_vars and pip."""
    example = REPO / "examples" / "job_submission"
    out = subprocess.run([sys.executable, "submit.py"], cwd=example, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ACTORHUB_API_SERVER_ADDRESS": head.url})
    assert out.returncode == 0, out.stderr
    assert "status: SUCCEEDED" in out.stdout, out.stdout
    assert "Requested number of iterations is: 7" in out.stdout
    assert "Environment variable MY_VARIABLE has a value of foo" in out.stdout
    assert "\n".join(str(i) for i in range(1, 8)) in out.stdout
    assert "Requests 2.26.0" in out.stdout


INIT_WITH_DASHBOARD = """
import sys, time, actorhub
from actorhub.job_submission import JobSubmissionClient
context = actorhub.init(num_cpus=1, dashboard_port=int(sys.argv[1]))
print("context url", context.dashboard_url, flush=True)
with JobSubmissionClient() as client:
    job_id = client.submit_job(entrypoint="echo from a job of a local cluster")
    while not client.get_job_status(job_id).is_terminal():
        time.sleep(0.05)
    print("job", client.get_job_status(job_id).value, client.get_job_logs(job_id).strip(), flush=True)
    # A job still running when the cluster stops ends with it.
    sleeper = client.submit_job(entrypoint=sys.argv[2])
    while "pid" not in client.get_job_logs(sleeper):
        time.sleep(0.05)
    print("sleeper", client.get_job_logs(sleeper).strip(), flush=True)
actorhub.shutdown()
"""


def test_init_starts_the_dashboard_and_prints_its_url(tmp_path: Path) -> None:
    port = _free_port()
    out = subprocess.run([sys.executable, "-c", INIT_WITH_DASHBOARD, str(port), SLEEPER], capture_output=True,
                         text=True, timeout=120, env=_own_root(tmp_path))
    assert out.returncode == 0, out.stderr
    sleeper = int(re.search(r"sleeper pid (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    wait_for(lambda: gone(sleeper), "the running job to end with its cluster", 15)
    assert f"View the dashboard at http://127.0.0.1:{port}" in out.stderr
    assert f"context url 127.0.0.1:{port}" in out.stdout
    assert "job SUCCEEDED from a job of a local cluster" in out.stdout
    # shutdown() ended the dashboard with the cluster (the leak check sees any process left).


def test_a_dashboard_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    env = _own_root(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = _cli("start", "--head", "--num-cpus", "1", "--dashboard-port", str(port), env=env)
    assert started.returncode == 1
    assert f"the dashboard's port {port} on 127.0.0.1 is in use" in started.stderr, started.stderr
    assert "Traceback" not in started.stderr
    assert "No running cluster" in _cli("stop", env=env).stdout  # nothing was left running


@pytest.mark.network
def test_a_runtime_env_that_cannot_be_set_up_fails_the_job(client: JobSubmissionClient) -> None:
    job_id = client.submit_job(entrypoint="echo never", runtime_env={"pip": ["actorhub-no-such-package-h14==0.0.1"]})
    info = wait_until_ended(client, job_id, timeout=120)
    assert info.status == JobStatus.FAILED and info.error_type == "RUNTIME_ENV_SETUP_FAILED"
    assert info.message is not None and "actorhub-no-such-package-h14" in info.message
    assert info.driver_exit_code is None and client.get_job_logs(job_id) == ""
