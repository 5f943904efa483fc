"""Issue 11's gaps: the context of an actor call, actors made inside a task (their job and
namespace), and exit_actor() in a constructor."""

from __future__ import annotations

import asyncio
import atexit
import time
from pathlib import Path

import pytest
from _drivers import run_driver
from _wait import wait_for

import actorhub
from actorhub.api import arg_checks
from actorhub.exceptions import ActorDiedError, TaskCancelledError
from actorhub.runtime.runtime import current


@actorhub.remote
class Named:
    def where(self) -> tuple[str, str | None]:
        context = actorhub.get_runtime_context()
        return context.namespace, context.get_task_name()


@actorhub.remote
def make_named_actor(name: str) -> tuple[str, str, actorhub.ActorHandle]:
    """In a task: create a named actor; where the task (and so the actor) belongs. Its handle
    goes back: the caller keeps the actor alive (an actor ends with its last handle)."""
    handle = Named.options(name=name).remote()
    actorhub.get(handle.where.remote())
    context = actorhub.get_runtime_context()
    found = actorhub.get_actor(name)  # in the task's namespace
    assert found.actor_id == handle.actor_id
    return context.namespace, context.get_job_id(), handle


# -- the context of an actor call ---------------------------------------------------------------

@actorhub.remote
class Probe:
    def __init__(self) -> None:
        self.in_init = actorhub.get_runtime_context().get_task_name()

    def context(self) -> tuple[str | None, str | None, str | None]:
        context = actorhub.get_runtime_context()
        return context.get_task_id(), context.get_task_name(), self.in_init

    def pair(self) -> tuple[str | None, str | None]:
        context = actorhub.get_runtime_context()
        return context.get_task_id(), context.get_task_id()


@actorhub.remote
class AsyncProbe:
    async def context(self, delay: float) -> tuple[str | None, str | None]:
        await asyncio.sleep(delay)  # calls interleave: each keeps its own
        context = actorhub.get_runtime_context()
        return context.get_task_id(), context.get_task_name()


def test_an_actor_call_knows_its_task_id_and_name(shared_cluster: actorhub.ClusterContext) -> None:
    for probe in (Probe.remote(), Probe.options(max_concurrency=3).remote()):
        refs = [probe.context.remote() for _ in range(4)]
        for ref, (task_id, name, in_init) in zip(refs, actorhub.get(refs), strict=True):
            assert task_id == ref.task_id().hex()
            assert name == "Probe.context"
            assert in_init is None  # the constructor is no method call
        one, two = probe.pair.options(num_returns=2).remote()
        assert actorhub.get(one) == one.task_id().hex() and one.task_id() == two.task_id()
    probe = AsyncProbe.remote()
    refs = [probe.context.remote(0.2 - 0.05 * i) for i in range(4)]
    for ref, (task_id, name) in zip(refs, actorhub.get(refs), strict=True):
        assert (task_id, name) == (ref.task_id().hex(), "AsyncProbe.context")
    # Outside a call (the driver): none.
    assert actorhub.get_runtime_context().get_task_id() is None


# -- exit_actor() in the constructor ---------------------------------------------------------

@actorhub.remote(max_restarts=2)
class QuitsAtOnce:
    def __init__(self, marker: str) -> None:
        atexit.register(lambda: Path(marker).write_text("atexit ran"))
        actorhub.actor.exit_actor()

    def ping(self) -> str:
        return "pong"


def test_exit_actor_in_the_constructor_is_an_intentional_exit(
    shared_cluster: actorhub.ClusterContext, tmp_path: Path,
) -> None:
    marker = tmp_path / "atexit"
    quitter = QuitsAtOnce.remote(str(marker))
    intentional = r"exited intentionally: exit_actor\(\) was called in QuitsAtOnce.__init__"
    with pytest.raises(ActorDiedError, match=intentional):
        actorhub.get(quitter.ping.remote(), timeout=30)
    info = current().hub.actor_info(quitter.actor_id)
    assert info.state == "DEAD" and info.num_restarts == 0  # not restarted, whatever max_restarts
    assert "exited intentionally" in info.death_cause and "constructor raised" not in info.death_cause
    assert marker.read_text() == "atexit ran"


# -- actors made in a task: the task's job and namespace ------------------------------------------

@actorhub.remote
class Keeper:
    def __init__(self) -> None:
        self.held: list[actorhub.ActorHandle] = []

    def hold(self, handle: actorhub.ActorHandle) -> None:
        self.held.append(handle)


def test_an_actor_made_in_a_task_belongs_to_the_tasks_job(shared_cluster: actorhub.ClusterContext) -> None:
    context = actorhub.get_runtime_context()
    namespace, job_id, handle = actorhub.get(make_named_actor.remote("made-in-a-task"))
    actor_id = handle.actor_id
    assert (namespace, job_id) == (context.namespace, context.get_job_id())
    assert actorhub.get_actor("made-in-a-task").actor_id == actor_id
    keeper = Keeper.options(name="keeper", lifetime="detached").remote()

    # A second job, in another namespace, runs the same task on the executors the first one's
    # work made: its actor is in its own namespace and ends with it.
    result = run_driver(
        f"""
        import actorhub, test_issue11_gaps as gaps
        actorhub.init(address={shared_cluster["address"]!r}, namespace="second-job")
        namespace, job_id, handle = actorhub.get(gaps.make_named_actor.remote("made-in-a-task"))
        actor_id = handle.actor_id
        assert namespace == "second-job", namespace
        assert job_id == actorhub.get_runtime_context().get_job_id()
        assert actorhub.get_actor("made-in-a-task").actor_id == actor_id
        assert actorhub.get(gaps.Named.remote().where.remote())[0] == "second-job"
        # A handle held elsewhere does not keep it: it ends with its job.
        keeper = actorhub.get_actor("keeper", namespace={context.namespace!r})
        actorhub.get(keeper.hold.remote(handle))
        print(actor_id)
        """,
        PYTHONPATH=str(Path(__file__).parent),
    )
    second = result.stdout.split()[-1]
    assert second != actor_id
    # The second job ended: its actor, non-detached, was killed with it; ours lives.
    wait_for(lambda: current().hub.actor_info(second).state == "DEAD", "the second job's actor to end", 20)
    assert "job" in current().hub.actor_info(second).death_cause
    info = current().hub.actor_info(actor_id)
    assert info.state == "ALIVE", info.death_cause
    assert actorhub.get(actorhub.get_actor("made-in-a-task").where.remote()) == (context.namespace, "Named.where")
    actorhub.kill(keeper)


# -- argument checks on every handle ----------------------------------------------------------

@actorhub.remote
class Signed:
    def add(self, a: int, b: int = 1, /, *, scale: int = 1) -> int:
        return (a + b) * scale

    def anything(self, *args: object, **kwargs: object) -> int:
        return len(args) + len(kwargs)


@actorhub.remote
def call_wrongly(handle: actorhub.ActorHandle) -> str:
    """In another process, on an unpickled handle: the check happens there, at .remote()."""
    try:
        handle.add.remote(1, 2, 3)
    except TypeError as e:
        return str(e)
    return "no TypeError"


def test_the_text_form_binds_as_the_signature_does() -> None:
    def f(a: int, b: int = 2, /, c: int = 3, *args: int, d: int, e: int = 5, **kw: int) -> None:
        pass

    direct = arg_checks._check_for(f, "f.remote()", drop_first=False)
    assert direct is not None and direct.text == "0a;0b=;1c=;2args;3d;3e=;4kw"
    check = arg_checks.from_text(direct.text, "f.remote()")
    assert check is not None
    check((1,), {"d": 4})
    check((1, 2, 3, 4, 5), {"d": 4, "zz": 1})
    for args, kwargs, message in (((), {"d": 1}, "missing a required argument: 'a'"),
                                  ((1,), {}, "missing a required argument: 'd'")):
        with pytest.raises(TypeError, match=message):
            check(args, kwargs)
    assert arg_checks.from_text("", "x") is None
    assert arg_checks.from_text("9bad", "x") is None  # a form this version does not know: the actor checks


def test_handles_from_get_actor_and_other_processes_check_arguments(shared_cluster: actorhub.ClusterContext) -> None:
    actor = Signed.options(name="signed").remote()
    found = actorhub.get_actor("signed")
    assert found._core._checks is None  # no class at hand: its checks come from the method table
    assert actorhub.get(found.add.remote(1, 2, scale=3)) == 9
    with pytest.raises(TypeError, match=r"Signed\.add\.remote\(\): too many positional arguments"):
        found.add.remote(1, 2, 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        found.add.remote(1, nope=2)
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        found.add.remote()
    assert actorhub.get(found.anything.remote(1, 2, x=3)) == 3  # nothing to check
    message = actorhub.get(call_wrongly.remote(found))
    assert message == "Signed.add.remote(): too many positional arguments"
    del actor


# -- a recursive cancel reaches the actor calls the task made (Ray: "child Tasks and Actor Tasks") --

@actorhub.remote(concurrency_groups={"probe": 1})
class Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []
        self.flags: set[str] = set()

    def block(self, seconds: float) -> None:
        self.ran.append("block")
        time.sleep(seconds)

    def record(self, tag: str) -> None:
        self.ran.append(tag)

    @actorhub.method(concurrency_group="probe")
    def flag(self, tag: str) -> None:
        self.flags.add(tag)

    @actorhub.method(concurrency_group="probe")
    def seen(self) -> tuple[list[str], set[str]]:
        return list(self.ran), set(self.flags)


@actorhub.remote
def call_and_wait(recorder: actorhub.ActorHandle, tag: str) -> None:
    call = recorder.record.remote(tag)  # queued behind block()
    recorder.flag.remote(tag)
    actorhub.get(call)


@pytest.mark.parametrize("recursive", [True, False])
def test_a_recursive_cancel_reaches_the_tasks_actor_calls(
    shared_cluster: actorhub.ClusterContext, recursive: bool,
) -> None:
    recorder = Recorder.remote()
    recorder.block.remote(4.0)
    wait_for(lambda: "block" in actorhub.get(recorder.seen.remote())[0], "block() to start", 20)
    task = call_and_wait.remote(recorder, "from-task")
    wait_for(lambda: "from-task" in actorhub.get(recorder.seen.remote())[1], "the task's call to be queued", 20)
    actorhub.cancel(task, recursive=recursive)
    with pytest.raises(TaskCancelledError):
        actorhub.get(task, timeout=30)
    recorder.record.remote("after")  # runs after block(), and after the task's call if it is still queued
    wait_for(lambda: "after" in actorhub.get(recorder.seen.remote())[0], "the calls after block()", 20)
    ran = actorhub.get(recorder.seen.remote())[0]
    assert ran == (["block", "after"] if recursive else ["block", "from-task", "after"])


# -- Ray's id objects ---------------------------------------------------------------------------

def test_id_objects_as_in_ray(shared_cluster: actorhub.ClusterContext) -> None:
    import pickle

    ref = actorhub.put(1)
    task_id = ref.task_id()
    assert isinstance(task_id, actorhub.TaskID) and task_id.hex() == ref.hex()
    assert actorhub.TaskID.from_binary(task_id.binary()) == task_id
    assert pickle.loads(pickle.dumps(task_id)) == task_id and {task_id: 1}[actorhub.TaskID(ref.hex())] == 1
    job = actorhub.JobID.from_hex(actorhub.get_runtime_context().get_job_id())
    assert job != actorhub.TaskID(job.hex()) and job != job.hex()  # an id equals only its own kind
    assert actorhub.NodeID.nil().is_nil() and not job.is_nil()
    assert repr(actorhub.ActorID("ab")) == "ActorID(ab)"
    with pytest.raises(TypeError, match="hex str"):
        actorhub.JobID(b"ab")  # type: ignore[arg-type]
