"""Actor lifetime by handle references (Ray's actor GC): an actor that is not detached ends once
every strong handle to it, in every process, is gone, after the calls queued before.

Ray's rules kept: handles from get_actor (and current_actor) are weak and keep nothing alive,
named actors are collected like the others, detached actors never are. A graceful end runs
`__ray_shutdown__` then the atexit handlers; `kill` runs neither.
"""

from __future__ import annotations

import atexit
import gc
import os
import pickle
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import gone
from _wait import collecting, wait_for

import actorhub
from actorhub.namespaces.rules import SYSTEM_NAMESPACE
from actorhub.runtime.actor_refs import OwnedActors, actor_ref_id
from actorhub.runtime.object_table import ObjectTable
from actorhub.runtime.runtime import current

OUT_OF_SCOPE = "all references to the actor were removed"


@pytest.fixture(scope="module")
def lifetime_cluster(shared_cluster: actorhub.ClusterContext) -> Iterator[actorhub.ClusterContext]:
    yield shared_cluster


def _state(actor_id: str) -> tuple[str, str]:
    info = current().hub.actor_info(actor_id)
    return info.state, info.death_cause


def _ends(pid: int, actor_id: str, cause: str = OUT_OF_SCOPE) -> None:
    wait_for(collecting(lambda: gone(pid)), f"the actor's process {pid} to exit", 20)
    wait_for(collecting(lambda: _state(actor_id)[0] == "DEAD"), "the hub to mark the actor DEAD", 20)
    assert cause in _state(actor_id)[1]


def _lives(pid: int, actor_id: str, for_s: float = 0.6) -> None:
    """Still alive after the owner's release loop (100 ms) had time to act several times."""
    gc.collect()
    time.sleep(for_s)
    assert not gone(pid), "the actor ended while a handle to it was still held"
    assert _state(actor_id)[0] == "ALIVE"


@actorhub.remote
class Tidy:
    """Notes its cleanup hooks, in order, in a file."""

    def __init__(self, log: str = "") -> None:
        self.log = log
        if log:
            atexit.register(self._note, "atexit")

    def _note(self, what: str) -> None:
        with open(self.log, "a") as f:
            f.write(what + "\n")

    def pid(self) -> int:
        return os.getpid()

    def echo(self, i: int) -> int:
        return i

    def slow(self, i: int) -> int:
        time.sleep(0.002)
        return i

    def __ray_shutdown__(self) -> None:
        if self.log:
            self._note("__ray_shutdown__")


@actorhub.remote
class AsyncTidy:
    async def pid(self) -> int:
        return os.getpid()

    async def slow(self, i: int) -> int:
        import asyncio

        await asyncio.sleep(0.002)
        return i


@actorhub.remote
class Keeper:
    def __init__(self, *kept: Any) -> None:
        self.kept: list[Any] = list(kept)

    def keep(self, handle: Any) -> int:
        self.kept.append(handle)
        return len(self.kept)

    def call_kept(self) -> int:
        return int(actorhub.get(self.kept[0].pid.remote()))

    def drop(self) -> None:
        self.kept.clear()

    def pid(self) -> int:
        return os.getpid()

    def make_child(self) -> list[Any]:
        # The child is owned by this actor; its handle goes back to the caller inside a value.
        return [Tidy.remote()]


@actorhub.remote
def call_later(boxed: list[Any], delay: float) -> int:
    time.sleep(delay)
    return int(actorhub.get(boxed[0].pid.remote()))


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_dropping_the_last_handle_ends_the_actor_gracefully(lifetime_cluster: Any, tmp_path: Path) -> None:
    log = tmp_path / "hooks"
    actor = Tidy.remote(str(log))
    pid = actorhub.get(actor.pid.remote())
    actor_id = actor.actor_id
    method = actor.echo  # a method taken from the handle keeps the actor as the handle does
    del actor
    _lives(pid, actor_id, for_s=0.3)
    assert actorhub.get(method.remote(7)) == 7
    del method
    _ends(pid, actor_id)
    assert _lines(log) == ["__ray_shutdown__", "atexit"]
    with pytest.raises(ValueError):
        actorhub.get_actor("nothing-by-this-name")


@pytest.mark.parametrize("kind", ["serial", "threaded", "async"])
def test_calls_queued_before_the_last_handle_went_all_run(lifetime_cluster: Any, kind: str) -> None:
    if kind == "async":
        actor: Any = AsyncTidy.remote()
    else:
        actor = Tidy.options(max_concurrency=4 if kind == "threaded" else 1).remote()
    pid = actorhub.get(actor.pid.remote())
    actor_id = actor.actor_id
    refs = [actor.slow.remote(i) for i in range(100)]
    del actor
    assert actorhub.get(refs, timeout=60) == list(range(100))
    _ends(pid, actor_id)


def test_a_handle_dropped_right_after_its_first_call_still_gets_the_answer(lifetime_cluster: Any) -> None:
    """`get(Cls.remote().method.remote())`: the handle is gone before the actor is even placed;
    the call queued on it holds the actor until it has run, as in Ray."""
    for i in range(30):
        assert actorhub.get(Tidy.remote().pid.remote(), timeout=60) > 0
        assert actorhub.get(Tidy.options(name=f"temporary-{i}").remote().pid.remote(), timeout=60) > 0


def test_a_handle_kept_by_another_actor_keeps_the_actor_until_it_drops_it(lifetime_cluster: Any) -> None:
    target = Tidy.remote()
    keeper = Keeper.remote()
    pid = actorhub.get(target.pid.remote())
    target_id = target.actor_id
    assert actorhub.get(keeper.keep.remote(target)) == 1
    del target
    _lives(pid, target_id)
    assert actorhub.get(keeper.call_kept.remote()) == pid
    actorhub.get(keeper.drop.remote())
    _ends(pid, target_id)
    actorhub.kill(keeper)


def test_a_handle_given_to_a_constructor_is_borrowed_by_the_new_actor(lifetime_cluster: Any) -> None:
    target = Tidy.remote()
    pid = actorhub.get(target.pid.remote())
    target_id = target.actor_id
    keeper = Keeper.remote(target)
    del target
    assert actorhub.get(keeper.call_kept.remote()) == pid
    _lives(pid, target_id)
    actorhub.get(keeper.drop.remote())
    _ends(pid, target_id)
    actorhub.kill(keeper)


def test_a_handle_passed_to_a_task_lives_through_the_task(lifetime_cluster: Any) -> None:
    target = Tidy.remote()
    pid = actorhub.get(target.pid.remote())
    target_id = target.actor_id
    ref = call_later.remote([target], 0.5)
    del target
    # The task calls the actor after the driver dropped its handle: its argument holds it.
    assert actorhub.get(ref, timeout=60) == pid
    _ends(pid, target_id)


def test_a_handle_returned_inside_a_value_is_borrowed_from_its_owner(lifetime_cluster: Any) -> None:
    keeper = Keeper.remote()
    [child] = actorhub.get(keeper.make_child.remote())
    pid = actorhub.get(child.pid.remote())
    child_id = child.actor_id
    _lives(pid, child_id)  # its owner (the keeper) dropped its own handle long ago
    del child
    _ends(pid, child_id)
    actorhub.kill(keeper)


def test_a_borrower_that_is_killed_releases_the_actor(lifetime_cluster: Any) -> None:
    target = Tidy.remote()
    keeper = Keeper.remote()
    pid = actorhub.get(target.pid.remote())
    target_id = target.actor_id
    actorhub.get(keeper.keep.remote(target))
    del target
    _lives(pid, target_id, for_s=0.3)
    os.kill(actorhub.get(keeper.pid.remote()), signal.SIGKILL)
    # The owner's probes (every 2 s, two refusals in a row) drop the dead borrower.
    _ends(pid, target_id)


def test_a_named_actor_ends_with_its_last_handle_and_get_actor_handles_do_not_count(lifetime_cluster: Any) -> None:
    named = Tidy.options(name="collected").remote()
    pid = actorhub.get(named.pid.remote())
    actor_id = named.actor_id
    looked_up = actorhub.get_actor("collected")  # weak, as in Ray
    assert actorhub.get(looked_up.pid.remote()) == pid
    del named
    _ends(pid, actor_id)
    with pytest.raises(ValueError):
        actorhub.get_actor("collected")
    with pytest.raises(actorhub.exceptions.ActorDiedError, match=OUT_OF_SCOPE):
        actorhub.get(looked_up.pid.remote())
    # The name is free again; get_if_exists finding the actor gives a weak handle too.
    again = Tidy.options(name="collected", get_if_exists=True).remote()
    found = Tidy.options(name="collected", get_if_exists=True).remote()
    assert found == again
    again_pid = actorhub.get(found.pid.remote())
    assert again_pid != pid
    again_id = again.actor_id
    del again
    _ends(again_pid, again_id)


def test_an_actor_never_placed_is_dropped_with_its_last_handle(lifetime_cluster: Any) -> None:
    waiting = Tidy.options(num_cpus=64).remote()  # no node has that many CPUs
    actor_id = waiting.actor_id
    assert _state(actor_id)[0] == "PENDING"
    del waiting
    wait_for(collecting(lambda: _state(actor_id)[0] == "DEAD"), "the pending actor to be dropped", 20)
    assert OUT_OF_SCOPE in _state(actor_id)[1]


def test_detached_and_system_actors_are_never_collected(lifetime_cluster: Any) -> None:
    detached = Tidy.options(name="kept-forever", lifetime="detached").remote()
    pid = actorhub.get(detached.pid.remote())
    actor_id = detached.actor_id
    assert actorhub.get(call_later.remote([detached], 0.0)) == pid  # tasks run on system actors
    del detached
    _lives(pid, actor_id)
    everything = current().hub.list_actors("", all_namespaces=True, include_dead=True)
    system = [a for a in everything if a.namespace == SYSTEM_NAMESPACE]
    assert system and all(a.detached and a.state == "ALIVE" for a in system)
    handle = actorhub.get_actor("kept-forever")
    del handle
    _lives(pid, actor_id, for_s=0.3)
    actorhub.kill(actorhub.get_actor("kept-forever"))


def test_a_handle_pickled_by_user_code_keeps_the_actor_while_its_owner_lives(lifetime_cluster: Any) -> None:
    actor = Tidy.remote()
    pid = actorhub.get(actor.pid.remote())
    actor_id = actor.actor_id
    blob = pickle.dumps(actor)
    del actor
    _lives(pid, actor_id)
    assert actorhub.get(pickle.loads(blob).pid.remote()) == pid
    actorhub.kill(pickle.loads(blob))


def test_ray_terminate_runs_the_exit_hooks_and_kill_does_not(lifetime_cluster: Any, tmp_path: Path) -> None:
    terminated_log, killed_log = tmp_path / "terminated", tmp_path / "killed"
    terminated = Tidy.remote(str(terminated_log))
    killed = Tidy.remote(str(killed_log))
    terminated_pid, killed_pid = actorhub.get([terminated.pid.remote(), killed.pid.remote()])
    refs = [terminated.slow.remote(i) for i in range(20)]
    terminated.__ray_terminate__.remote()
    assert actorhub.get(refs) == list(range(20))
    _ends(terminated_pid, terminated.actor_id, cause="__ray_terminate__")
    assert _lines(terminated_log) == ["__ray_shutdown__", "atexit"]
    actorhub.kill(killed)
    wait_for(collecting(lambda: gone(killed_pid)), "the killed actor's process to exit", 20)
    assert _lines(killed_log) == []


def test_calls_and_method_options_do_not_touch_the_reference_count(lifetime_cluster: Any) -> None:
    actor = Tidy.remote()
    entries = current().objects._entries
    entry = entries[actor_ref_id(actor.actor_id)]
    assert entry.refs == 1
    refs = [actor.echo.remote(i) for i in range(10_000)]
    refs.append(actor.echo.options(num_returns=1).remote(-1))
    assert actorhub.get(refs[-1]) == -1
    assert entry.refs == 1
    del refs
    actorhub.kill(actor)


def test_the_owner_ends_an_actor_once_no_handle_or_borrower_holds_it() -> None:
    """The owner's bookkeeping alone, without processes."""
    table = ObjectTable()
    ended: list[tuple[str, str]] = []
    owned = OwnedActors(table, "127.0.0.1:1", lambda actor_id, class_name: ended.append((actor_id, class_name)))
    handle_ref = owned.own("held", "Held")
    killed_ref = owned.own("killed", "Killed")
    assert table.add_borrower(actor_ref_id("held"), "127.0.0.1:2")
    del handle_ref
    assert table.take_unreferenced_actors() == []  # a borrower still holds it
    table.remove_borrower(actor_ref_id("held"), "127.0.0.1:2", 1)
    owned.forget("killed")  # kill() ended it: nothing left to end
    del killed_ref
    gone_ids = table.take_unreferenced_actors()
    assert sorted(gone_ids) == [actor_ref_id("held"), actor_ref_id("killed")]
    owned.end_unreferenced(gone_ids)
    wait_for(collecting(lambda: bool(ended)), "the end to be carried out", 5)
    assert ended == [("held", "Held")] and len(owned) == 0
    assert table.owned_snapshot() == []  # pseudo-objects are not objects to `actorhub memory`
