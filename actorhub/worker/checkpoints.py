"""Actor checkpoints in the worker: an actor's state saved as it serves, restored on restart.

An actor whose class defines `__actorhub_checkpoint__(self)` (returning bytes, or any value
cloudpickle can take) and `__actorhub_restore__(self, state)` is checkpointed
- after every N calls, or after the first call T seconds after the last checkpoint
  (`checkpoint_interval={"calls": N, "seconds": T}`): on the thread that ran the call, after it
  and before its reply leaves, so whatever a caller got a reply for is in a checkpoint (an idle
  actor's state does not change, so time alone never triggers one);
- whenever one of its methods calls `actorhub.checkpoint()`.

A checkpoint goes to the hub (`hub/checkpoint_service.py`, files beside its durable store), or,
with `checkpoint_dir` (ACTORHUB_CHECKPOINT_DIR, a directory every node shares, for large state),
straight to a file there. A restarted actor (incarnation > 0: a crash, its node lost, a kill
that restarts) runs its constructor, then `__actorhub_restore__` with the newest checkpoint,
before its first call. A checkpoint that fails to save is reported in the worker's log (which
reaches the driver) and the calls go on; `actorhub.checkpoint()` raises it instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cloudpickle

from actorhub.runtime.checkpoint_files import CheckpointFiles

log = logging.getLogger(__name__)

TAKE = "__actorhub_checkpoint__"
RESTORE = "__actorhub_restore__"
# A checkpoint's first byte: the state as the actor returned it (bytes), or pickled.
_RAW, _PICKLED = b"B", b"P"


class CheckpointStore(Protocol):
    def save(self, actor_id: str, incarnation: int, state: bytes) -> None: ...

    def load(self, actor_id: str) -> bytes | None: ...


class HubCheckpoints:
    def __init__(self, hub: Any) -> None:
        self._hub = hub  # wire.hub.HubClient

    def save(self, actor_id: str, incarnation: int, state: bytes) -> None:
        self._hub.save_checkpoint(actor_id, incarnation, state)

    def load(self, actor_id: str) -> bytes | None:
        state: bytes | None = self._hub.load_checkpoint(actor_id)
        return state


class DirectoryCheckpoints:
    def __init__(self, directory: Path) -> None:
        self._files = CheckpointFiles(directory)

    def save(self, actor_id: str, incarnation: int, state: bytes) -> None:
        self._files.save(actor_id, state)

    def load(self, actor_id: str) -> bytes | None:
        return self._files.load(actor_id)


def is_checkpointed(cls: type) -> bool:
    return callable(getattr(cls, TAKE, None)) and callable(getattr(cls, RESTORE, None))


class Checkpointer:
    def __init__(
        self, instance: Any, actor_id: str, incarnation: int, store: CheckpointStore, every_calls: int = 0,
        every_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._instance = instance
        self._actor_id = actor_id
        self._incarnation = incarnation
        self._store = store
        self._every_calls = every_calls
        self._every_s = every_s
        self._clock = clock
        self._calls = 0
        self._last = clock()
        self._lock = threading.Lock()  # a threaded actor: one checkpoint at a time
        self.taken = 0  # checkpoints saved by this process

    def restore(self) -> bool:
        """Give the instance its newest checkpoint; False when there is none."""
        blob = self._store.load(self._actor_id)
        if not blob:
            return False
        kind, data = blob[:1], blob[1:]
        state = data if kind == _RAW else cloudpickle.loads(data)
        getattr(self._instance, RESTORE)(state)
        return True

    def after_call(self) -> None:
        """On the thread that ran a call, before its reply leaves: a checkpoint if one is due."""
        self._calls += 1
        due = (self._every_calls and self._calls >= self._every_calls) or (
            self._every_s and self._clock() - self._last >= self._every_s)
        if not due:
            return
        try:
            self.take()
        except Exception as e:  # the calls go on; what went wrong reaches the driver's log
            log.error("checkpoint of actor %s failed: %r", self._actor_id, e)

    def take(self) -> None:
        with self._lock:
            state = getattr(self._instance, TAKE)()
            blob = _RAW + bytes(state) if isinstance(state, bytes | bytearray) else _PICKLED + cloudpickle.dumps(state)
            self._store.save(self._actor_id, self._incarnation, blob)
            self._calls = 0
            self._last = self._clock()
            self.taken += 1


# The checkpointer of the actor this process hosts (one actor per worker), for checkpoint().
_current: Checkpointer | None = None


def install(checkpointer: Checkpointer) -> None:
    global _current
    _current = checkpointer


def current() -> Checkpointer | None:
    return _current
