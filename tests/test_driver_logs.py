"""Workers' output at the driver (Ray's log_to_driver): prefixes, stderr, output of subprocesses,
deduplication, jobs kept apart, detached actors, process titles, and lines from another node.

The module's cluster is driven from this process, whose printed lines pytest captures (`capsys`);
other drivers are separate programs that join it and watch their own stdout."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _drivers import run_driver
from _procs import end, parents

import actorhub
from actorhub._proto.v1 import hub_pb2
from actorhub.api.log_dedup import LogDeduplicator
from actorhub.cli import main as cli_main
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config, ConfigError
from actorhub.hub.log_fanout import QUEUE_BATCHES, LogFanout
from actorhub.node.log_files import LogFileTail
from actorhub.runtime.log_markers import ACTOR_NAME, JOB_ID, NODE_ID, PID, TASK_NAME
from actorhub.runtime.runtime import current
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@actorhub.remote
class Speaker:
    def say(self, text: str) -> int:
        print(text)
        return os.getpid()

    def say_err(self, text: str) -> None:
        print(text, file=sys.stderr)

    def shell(self, text: str) -> None:
        os.system(f"echo {text}")  # written by another process, straight to the file

    def say_and_die(self, text: str) -> None:
        sys.stdout.write(text)  # no line end: the last line of a worker that dies
        sys.stdout.flush()
        os._exit(1)

    def chatter(self, text: str, times: int) -> None:
        for _ in range(times):
            print(text, flush=True)
            time.sleep(0.1)

    def cmdline(self) -> bytes:
        return Path("/proc/self/cmdline").read_bytes()


@actorhub.remote
class Shard:
    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"Shard-{self.index}"

    def say(self, text: str) -> int:
        print(text)
        return os.getpid()


@actorhub.remote
def shout(text: str) -> bytes:
    print(text)
    return Path("/proc/self/cmdline").read_bytes()


class Captured:
    """What this process printed, as pytest captured it, accumulated across reads."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.out = ""
        self.err = ""

    def read(self) -> None:
        out, err = self._capsys.readouterr()
        self.out += out
        self.err += err

    def wait_for(self, text: str, *, stderr: bool = False, timeout: float = 30.0) -> str:
        """The first captured line that holds `text`."""
        deadline = time.monotonic() + timeout
        while True:
            self.read()
            for line in (self.err if stderr else self.out).splitlines():
                if text in line:
                    return line
            assert time.monotonic() < deadline, f"{text!r} never reached the driver:\n{self.out}\n{self.err}"
            time.sleep(0.05)


@pytest.fixture
def captured(shared_cluster: actorhub.ClusterContext, capsys: pytest.CaptureFixture[str]) -> Captured:
    return Captured(capsys)


def _join_env(cluster: actorhub.ClusterContext) -> dict[str, str]:
    """The environment for another driver that joins the module's cluster with address="auto"."""
    return {"ACTORHUB_SESSION_ROOT": str(Path(cluster.session_dir).parent)}


# A separate driver's prelude: wait_seen(text) waits until its own stdout shows `text`.
WATCHING = """
import os, sys, time
import actorhub

class Tee:
    def __init__(self, real):
        self.real, self.parts = real, []
    def write(self, text):
        self.parts.append(text)
        return self.real.write(text)
    def flush(self):
        self.real.flush()

sys.stdout = Tee(sys.stdout)

def wait_seen(text, timeout=30):
    deadline = time.monotonic() + timeout
    while text not in "".join(sys.stdout.parts):
        assert time.monotonic() < deadline, f"never saw {text!r}"
        time.sleep(0.05)

@actorhub.remote
class Speaker:
    def say(self, text):
        print(text)
"""


def test_an_actors_stdout_stderr_and_subprocess_output_reach_the_driver_with_its_prefix(captured: Captured) -> None:
    speaker = Speaker.remote()
    pid = actorhub.get(speaker.say.remote("hello from the actor"))
    assert captured.wait_for("hello from the actor") == f"(Speaker pid={pid}) hello from the actor"
    actorhub.get(speaker.say_err.remote("an error line"))
    assert captured.wait_for("an error line", stderr=True) == f"(Speaker pid={pid}) an error line"
    assert "an error line" not in captured.out
    actorhub.get(speaker.shell.remote("echoed-by-a-subprocess"))
    assert captured.wait_for("echoed-by-a-subprocess") == f"(Speaker pid={pid}) echoed-by-a-subprocess"
    # Markers are never shown.
    assert ":job_id:" not in captured.out + captured.err
    assert ":actor_name:" not in captured.out + captured.err


def test_an_actor_with_its_own_repr_is_shown_by_it(captured: Captured) -> None:
    pid = actorhub.get(Shard.remote(7).say.remote("a line from a shard"))
    assert captured.wait_for("a line from a shard") == f"(Shard-7 pid={pid}) a line from a shard"


def test_a_tasks_print_reaches_the_driver_under_the_tasks_name(captured: Captured) -> None:
    # Words, not numbers: lines that differ only in numbers would be deduplicated across executors.
    words = ("alpha", "beta", "gamma")
    actorhub.get([shout.remote(f"task line {word}") for word in words])
    for word in words:
        line = captured.wait_for(f"task line {word}")
        assert line.startswith("(shout pid=") and line.endswith(f") task line {word}"), line


def test_the_last_line_of_a_worker_that_dies_reaches_the_driver(captured: Captured) -> None:
    speaker = Speaker.options(max_restarts=0).remote()
    with pytest.raises(actorhub.exceptions.ActorDiedError):
        actorhub.get(speaker.say_and_die.remote("last words without a line end"))
    assert captured.wait_for("last words without a line end").startswith("(Speaker pid=")


def test_identical_lines_from_ten_actors_print_once_then_as_repeated(captured: Captured) -> None:
    speakers = [Speaker.remote() for _ in range(10)]
    actorhub.get([s.say.remote("the same line from every actor") for s in speakers])
    repeated = captured.wait_for("[repeated", timeout=30)  # the 5 s window, then the count
    assert repeated.endswith("the same line from every actor [repeated 9x across cluster]") or \
        "the same line from every actor [repeated 9x across cluster] (actorhub deduplicates" in repeated, repeated
    plain = [line for line in captured.out.splitlines() if line.endswith(") the same line from every actor")]
    assert len(plain) == 1, captured.out


def test_repeats_are_not_deduplicated_with_dedup_logs_off(shared_cluster: actorhub.ClusterContext) -> None:
    out = run_driver(WATCHING + """
actorhub.init(address="auto")
speakers = [Speaker.remote() for _ in range(3)]
actorhub.get([s.say.remote("undeduplicated line") for s in speakers])
deadline = time.monotonic() + 30
while "".join(sys.stdout.parts).count("undeduplicated line") < 3:
    assert time.monotonic() < deadline, "".join(sys.stdout.parts)
    time.sleep(0.05)
""", ACTORHUB_DEDUP_LOGS="0", **_join_env(shared_cluster)).stdout
    assert out.count(") undeduplicated line") == 3
    assert "repeated" not in out


def test_log_to_driver_false_prints_nothing_and_the_files_still_have_the_lines(
    shared_cluster: actorhub.ClusterContext, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_driver(WATCHING + """
actorhub.init(address="auto", log_to_driver=False)
actorhub.get(Speaker.options(name="quiet-speaker").remote().say.remote("a line nobody prints"))
time.sleep(1.5)  # ten times the node's period: had it been sent, it would be here
""", **_join_env(shared_cluster)).stdout
    assert "a line nobody prints" not in out
    assert cli_main(["logs", "--actor", "quiet-speaker", "--session", shared_cluster.session_dir]) == 0
    assert ") a line nobody prints" in capsys.readouterr().out


def test_a_second_job_sees_only_its_own_lines(captured: Captured, shared_cluster: actorhub.ClusterContext) -> None:
    noisy = Speaker.remote()
    noise = noisy.chatter.remote("job one's chatter", 40)  # 4 s of lines while the other job runs
    captured.wait_for("job one's chatter")
    out = run_driver(WATCHING + """
actorhub.init(address="auto")
actorhub.get(Speaker.remote().say.remote("job two's line"))
wait_seen("job two's line")
time.sleep(1.0)
""", **_join_env(shared_cluster)).stdout
    assert "job two's line" in out
    assert "chatter" not in out
    actorhub.get(noise)
    captured.read()
    assert "job two's line" not in captured.out


def test_a_detached_actors_output_goes_to_its_creator_and_always_to_the_files(
    captured: Captured, shared_cluster: actorhub.ClusterContext, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_driver(WATCHING + """
actorhub.init(address="auto", namespace="logs")
speaker = Speaker.options(name="detached-speaker", lifetime="detached").remote()
actorhub.get(speaker.say.remote("said while my creator lives"))
wait_seen("said while my creator lives")
""", **_join_env(shared_cluster)).stdout
    assert "(Speaker pid=" in out
    speaker = actorhub.get_actor("detached-speaker", namespace="logs")
    try:
        actorhub.get(speaker.say.remote("said after my creator exited"))
        time.sleep(1.0)  # ten times the node's period
        captured.read()
        assert "said after my creator exited" not in captured.out + captured.err  # this job is not its creator
        assert cli_main(["logs", "--actor", "detached-speaker", "--session", shared_cluster.session_dir]) == 0
        shown = capsys.readouterr().out
        assert ") said while my creator lives" in shown and ") said after my creator exited" in shown, shown
    finally:
        actorhub.kill(speaker)


def test_workers_show_their_role_in_their_process_title(shared_cluster: actorhub.ClusterContext) -> None:
    speaker = Speaker.remote()
    assert actorhub.get(speaker.cmdline.remote()).split(b"\0")[0] == b"actorhub::Speaker"
    assert actorhub.get(shout.remote("titled")).split(b"\0")[0] == b"actorhub::shout"
    # The cluster's pre-started workers (this process started the cluster: they descend from it).
    ppids = parents()
    idle = [pid for pid in ppids if _cmdline(pid).startswith(b"actorhub::IDLE") and _descends_from_me(pid, ppids)]
    assert idle, "no idle worker of this cluster shows actorhub::IDLE"


def test_lines_reach_the_driver_again_after_the_hub_restarts(
    captured: Captured, shared_cluster: actorhub.ClusterContext
) -> None:
    speaker = Speaker.remote()
    actorhub.get(speaker.say.remote("before the hub restart"))
    captured.wait_for("before the hub restart")
    pid_file = Path(shared_cluster.session_dir) / "hub.pid"
    old = int(pid_file.read_text())
    os.kill(old, signal.SIGKILL)
    # The node's publisher and the driver's subscription both come back by themselves; lines
    # written while either is away are lost (the files keep them), so the actor says it again.
    deadline = time.monotonic() + 60
    while "again after the restart" not in captured.out:
        assert time.monotonic() < deadline, "no line reached the driver after the hub restarted"
        actorhub.get(speaker.say.remote("again after the restart"))
        time.sleep(0.5)
        captured.read()
    assert int(pid_file.read_text()) != old


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descends_from_me(pid: int, ppids: dict[int, int]) -> bool:
    while pid in ppids and pid > 1:
        pid = ppids[pid]
        if pid == os.getpid():
            return True
    return False


@pytest.fixture(params=["127.0.0.1", "127.0.0.2"])
def second_node(request: pytest.FixtureRequest, shared_cluster: actorhub.ClusterContext) -> Iterator[str]:
    """Another node agent on this host, in the same session, advertising the same address as
    the driver's node (127.0.0.1) or another one (127.0.0.2, as a node on another host would)."""
    process = start_node(Config.load(num_cpus=1), Session(Path(shared_cluster.session_dir)), shared_cluster.address,
                         host=request.param)
    try:
        deadline = time.monotonic() + 30
        while True:
            nodes = current().hub.cluster_status().nodes
            others = [n for n in nodes if n.alive and n.node_id != shared_cluster.node_id]
            if others:
                yield others[0].node_id
                break
            assert time.monotonic() < deadline, "the second node never registered"
            time.sleep(0.05)
    finally:
        end(process)


def test_lines_from_another_node_name_its_address_or_else_the_node(
    captured: Captured, second_node: str, shared_cluster: actorhub.ClusterContext, request: pytest.FixtureRequest
) -> None:
    host = request.node.callspec.params["second_node"]
    # Words, not the node's id or address: lines that differ only in words with digits are deduplicated.
    case = "sharing" if host == "127.0.0.1" else "apart"
    there = Speaker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(second_node, soft=False)).remote()
    pid = actorhub.get(there.say.remote(f"a line from the other node {case}"))
    line = captured.wait_for(f"a line from the other node {case}")
    where = f"node={second_node}" if host == "127.0.0.1" else f"ip={host}"
    assert line == f"(Speaker pid={pid}, {where}) a line from the other node {case}"
    here = Speaker.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(shared_cluster.node_id, soft=False)).remote()
    here_pid = actorhub.get(here.say.remote(f"a line from the driver's node {case}"))
    line = captured.wait_for(f"a line from the driver's node {case}")
    assert line == f"(Speaker pid={here_pid}) a line from the driver's node {case}"
    actorhub.kill(there)


# -- without a cluster ----------------------------------------------------------------------------


def test_deduplication_follows_rays_rules() -> None:
    now = [0.0]
    dedup = LogDeduplicator(5.0, allow_regex="^keep", skip_regex="^noise", clock=lambda: now[0])
    assert dedup.feed(("n", 1), "(A pid=1)", ["hello world 1"]) == [("(A pid=1)", "hello world 1")]
    # The same worker repeating itself prints; other workers are counted.
    assert dedup.feed(("n", 1), "(A pid=1)", ["hello world 2"]) == [("(A pid=1)", "hello world 2")]
    assert dedup.feed(("n", 2), "(A pid=2)", ["hello world 3"]) == []
    assert dedup.feed(("n", 3), "(A pid=3)", ["hello world 4"]) == []
    assert dedup.feed(("n", 2), "(A pid=2)", ["keep me", "noise here", "42"]) == [
        ("(A pid=2)", "keep me"), ("(A pid=2)", "42")]
    now[0] = 5.0
    (shown,) = dedup.expired()
    assert shown[0] == "(A pid=3)"
    assert shown[1].startswith("hello world 4 [repeated 2x across cluster] (actorhub deduplicates")
    # Counting goes on; a single repeat prints as it was; then the pattern is forgotten.
    assert dedup.feed(("n", 4), "(A pid=4)", ["hello world 5"]) == []
    now[0] = 10.0
    assert dedup.expired() == [("(A pid=4)", "hello world 5")]
    assert dedup.feed(("n", 5), "(A pid=5)", ["hello world 6"]) == [("(A pid=5)", "hello world 6")]
    assert dedup.feed(("n", 6), "(A pid=6)", ["hello world 7"]) == []
    assert dedup.flush() == [("(A pid=6)", "hello world 7")]


def test_a_worker_file_is_read_with_its_markers_applied_and_hidden(tmp_path: Path) -> None:
    path = tmp_path / "worker-ab12.out"
    path.write_text(f"{NODE_ID}n1\n{PID}42\nboot line\n{JOB_ID}j1\n{ACTOR_NAME}Counter\nhello\nwor")
    tail = LogFileTail.of(path)
    assert tail is not None
    first = tail.read()
    assert [(c.job_id, c.pid, c.name, c.lines) for c in first] == [("", 42, "", ("boot line",)),
                                                                  ("j1", 42, "Counter", ("hello",))]
    assert tail.waiting  # "wor" waits for its line end
    with path.open("a") as f:
        f.write(f"ld\n{JOB_ID}j2\n{TASK_NAME}f\ntask line\n")
    assert [(c.job_id, c.name, c.lines) for c in tail.read()] == [("j1", "Counter", ("world",)),
                                                                  ("j2", "f", ("task line",))]
    foreign = tmp_path / "worker-cd34.err"
    foreign.write_text("not a worker of ours\nmore\n")
    other = LogFileTail.of(foreign)
    assert other is not None and other.read() == [] and other.foreign
    assert LogFileTail.of(tmp_path / "node-x.log") is None


def test_a_bad_dedup_regex_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="dedup_logs_skip_regex"):
        Config.load(dedup_logs_skip_regex="(")


def test_the_hub_routes_lines_by_job_and_drops_what_a_slow_driver_cannot_take() -> None:
    def batch(*chunks: tuple[str, str]) -> hub_pb2.LogBatch:
        return hub_pb2.LogBatch(node_id="n", chunks=[hub_pb2.LogChunk(job_id=j, lines=[t]) for j, t in chunks])

    async def scenario() -> None:
        fanout, shutdown = LogFanout(), asyncio.Event()
        one, two = fanout.follow("j1", shutdown), fanout.follow("j2", shutdown)
        first_one, first_two = asyncio.ensure_future(anext(one)), asyncio.ensure_future(anext(two))
        await asyncio.sleep(0)
        assert fanout.subscribers == 2
        fanout.publish(batch(("j1", "for one"), ("j3", "for nobody"), ("", "for everyone")))
        assert [list(c.lines) for c in (await first_one).chunks] == [["for one"]]
        assert [list(c.lines) for c in (await anext(one)).chunks] == [["for everyone"]]
        assert [list(c.lines) for c in (await first_two).chunks] == [["for everyone"]]
        for _ in range(QUEUE_BATCHES + 10):  # nobody reads meanwhile: the queue is bounded
            fanout.publish(batch(("j1", "flood")))
        taken = 0
        while taken < QUEUE_BATCHES:
            await asyncio.wait_for(anext(one), 1.0)
            taken += 1
        late = asyncio.ensure_future(anext(one))
        await asyncio.sleep(0.05)
        assert not late.done()  # the 10 beyond the bound were dropped, not queued
        shutdown.set()
        with pytest.raises(StopAsyncIteration):
            await late
        await two.aclose()
        assert fanout.subscribers == 0

    asyncio.run(scenario())
