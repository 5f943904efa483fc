"""Actor state that survives restarts: `__actorhub_checkpoint__` / `__actorhub_restore__`,
`checkpoint_interval=` and `actorhub.checkpoint()`, stored by the hub beside its store (or in
`checkpoint_dir`), restored before a restarted actor's first call."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from test_hub_restart import kill_hub, wait_for_hub

import actorhub
from actorhub.exceptions import ActorDiedError, OptionsError
from actorhub.worker.checkpoints import Checkpointer


@actorhub.remote(max_restarts=-1, checkpoint_interval={"calls": 1})
class Counter:
    def __init__(self) -> None:
        self.value = 0

    def incr(self) -> int:
        self.value += 1
        return self.value

    def pid(self) -> int:
        return os.getpid()

    def __actorhub_checkpoint__(self) -> bytes:
        return str(self.value).encode()

    def __actorhub_restore__(self, state: bytes) -> None:
        self.value = int(state)


@actorhub.remote(max_restarts=-1)
class Notebook:
    """Checkpoints only when it says so; its state is any picklable value."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def write(self, note: str, save: bool = False) -> list[str]:
        self.notes.append(note)
        if save:
            actorhub.checkpoint()
        return self.notes

    def crash(self) -> None:
        os._exit(1)

    def __actorhub_checkpoint__(self) -> dict[str, Any]:
        return {"notes": list(self.notes)}

    def __actorhub_restore__(self, state: dict[str, Any]) -> None:
        self.notes = state["notes"]


def _sigkill_worker(actor: Any) -> None:
    pid = actorhub.get(actor.pid.remote(), timeout=30)
    os.kill(pid, signal.SIGKILL)


def _call_through_restart(call: Any) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            return actorhub.get(call(), timeout=30)
        except ActorDiedError:
            assert time.monotonic() < deadline, "the actor never came back"
            time.sleep(0.1)


def test_a_sigkilled_counter_continues_from_its_last_checkpoint(cluster: actorhub.ClusterContext) -> None:
    counter = Counter.remote()
    assert [actorhub.get(counter.incr.remote()) for _ in range(5)] == [1, 2, 3, 4, 5]
    _sigkill_worker(counter)
    assert _call_through_restart(counter.incr.remote) == 6
    # The hub keeps checkpoints beside its store: a hub restart keeps them too.
    session = Path(cluster["session_dir"])
    wait_for_hub(session, kill_hub(session))
    assert _call_through_restart(counter.incr.remote) == 7
    _sigkill_worker(counter)
    assert _call_through_restart(counter.incr.remote) == 8
    # actorhub.checkpoint() saves on demand; what came after it is lost with the process.
    notebook = Notebook.remote()
    actorhub.get(notebook.write.remote("a"))
    assert actorhub.get(notebook.write.remote("b", save=True)) == ["a", "b"]
    actorhub.get(notebook.write.remote("c"))
    with pytest.raises(ActorDiedError):
        actorhub.get(notebook.crash.remote())
    assert _call_through_restart(lambda: notebook.write.remote("d")) == ["a", "b", "d"]


def test_a_shared_checkpoint_dir_takes_them_instead_of_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_root: Path,
) -> None:
    directory = tmp_path / "checkpoints"
    monkeypatch.setenv("ACTORHUB_CHECKPOINT_DIR", str(directory))
    actorhub.init(num_cpus=1)
    try:
        counter = Counter.remote()
        actorhub.get([counter.incr.remote() for _ in range(3)])
        assert [p.read_bytes() for p in directory.iterdir()] == [b"B3"]
        _sigkill_worker(counter)
        assert _call_through_restart(counter.incr.remote) == 4
    finally:
        actorhub.shutdown()


def test_bad_uses_are_refused() -> None:
    with pytest.raises(OptionsError, match="needs the class to define __actorhub_checkpoint__"):
        actorhub.remote(checkpoint_interval={"calls": 2})(type("Plain", (), {}))
    for interval, message in [({"minutes": 1}, "takes"), ({"calls": 1.5}, "whole number"),
                              ({"seconds": -1}, "finite number > 0"), ({}, "takes")]:
        with pytest.raises(OptionsError, match=message):
            Counter.options(checkpoint_interval=interval)
    with pytest.raises(TypeError, match="outside a checkpointed actor"):
        actorhub.checkpoint()


class _Store:
    def __init__(self) -> None:
        self.saved: list[bytes] = []

    def save(self, actor_id: str, incarnation: int, state: bytes) -> None:
        self.saved.append(state)

    def load(self, actor_id: str) -> bytes | None:
        return self.saved[-1] if self.saved else None


class _State:
    def __init__(self) -> None:
        self.n = 0
        self.restored: object = None

    def __actorhub_checkpoint__(self) -> int:
        return self.n

    def __actorhub_restore__(self, state: object) -> None:
        self.restored = state


def test_the_seconds_rule_checkpoints_at_the_first_call_after_the_interval() -> None:
    now = [0.0]
    store, state = _Store(), _State()
    checkpointer = Checkpointer(state, "ab", 0, store, every_s=10.0, clock=lambda: now[0])
    for t in (1.0, 5.0, 9.9):
        now[0] = t
        state.n += 1
        checkpointer.after_call()
    assert store.saved == []  # idle time alone never saves: the state does not change then
    now[0] = 10.0
    state.n += 1
    checkpointer.after_call()
    now[0] = 15.0
    checkpointer.after_call()
    assert len(store.saved) == 1 and checkpointer.taken == 1
    fresh = _State()
    assert Checkpointer(fresh, "ab", 1, store).restore() and fresh.restored == 4
