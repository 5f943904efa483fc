"""`ObjectRef.job_id()`: the job an object was made for, read from its id wherever it travels."""

from __future__ import annotations

import actorhub
from actorhub import JobID, ObjectRef
from tests._drivers import run_driver


@actorhub.remote
def make_refs() -> list[ObjectRef[int]]:
    # Inside a task: the executor is a system actor, but what the task makes is its job's.
    return [actorhub.put(1), echo.remote(2)]


@actorhub.remote
def echo(x: int) -> int:
    return x


@actorhub.remote
class Keeper:
    def put(self) -> list[ObjectRef[int]]:
        return [actorhub.put(3)]

    def job(self) -> str:
        return actorhub.get_runtime_context().get_job_id()


def test_every_kind_of_ref_names_the_job_it_was_made_for(shared_cluster: actorhub.ClusterContext) -> None:
    job = JobID.from_hex(actorhub.get_runtime_context().get_job_id())
    put, task = actorhub.put(1), echo.remote(1)
    keeper = Keeper.remote()
    call = keeper.job.remote()
    assert put.job_id() == task.job_id() == call.job_id() == job
    inner = actorhub.get(make_refs.remote())
    assert [ref.job_id() for ref in inner] == [job, job] and actorhub.get(inner) == [1, 2]
    (in_actor,) = actorhub.get(keeper.put.remote())
    assert in_actor.job_id() == job and actorhub.get(in_actor) == 3
    # The id carries it: a ref rebuilt from its hex alone still knows.
    assert ObjectRef.from_hex(put.hex()).job_id() == job
    assert ObjectRef.nil().job_id().is_nil() and isinstance(put.job_id(), JobID)


def test_another_drivers_refs_name_its_own_job(shared_cluster: actorhub.ClusterContext) -> None:
    out = run_driver(f"""
        import actorhub
        actorhub.init(address={shared_cluster["address"]!r})
        print(actorhub.put(1).job_id().hex(), actorhub.get_runtime_context().get_job_id())
        actorhub.shutdown()
    """)
    ref_job, its_job = out.stdout.split()
    assert ref_job == its_job != actorhub.get_runtime_context().get_job_id()
