"""Lineage reconstruction: a task's result lost with its node is made again by running the task again.

On only with `enable_object_reconstruction`: the driver's own `init()` flag, or a cluster started
with it, which the hub's status says (every process that submits tasks learns it with its first
view of the nodes). Off, nothing here exists and a lost object raises ObjectLostError as before.

What is kept (Ray's lineage, by the owner, while refs to the result live):
- For each finished task with a result in a node's store, the `Task` itself (function, arguments
  blob, options, retries left) and the refs inside its arguments, which keep those objects (and,
  through their own entries, how to make them) alive. Small results live in the owner's table and
  are never lost with a node: their tasks keep nothing, nor do generator tasks.
- An entry goes when the last of its results leaves the owner's table (`ObjectTable.on_forget`),
  so lineage lives exactly as long as the refs that may need it. Entries are counted in bytes
  (mostly the arguments blob); past `lineage_max_bytes` the oldest are dropped first.

get() of an owned object whose read finds it lost (no copy left: ObjectLostError) calls
`value_of`, which makes the object pending again and:
- for a task result with lineage and retries left: spends one retry (the budget of `max_retries`
  that crashes spend too, as in Ray), does the same first for each argument owned here whose
  recorded copy was on a node that is gone (recursively), and submits the task again behind those
  arguments. The new result takes the lost one's place, and the get waits for it;
- otherwise completes the object with why it cannot be made: a put or an actor call's result
  (ObjectReconstructionFailedError), no retries left (...MaxAttemptsExceededError), its lineage
  dropped (...LineageEvictedError). A rerun that fails leaves its error as the object's value.
A task whose executor could not read an argument owned here (lost with its node) has that argument
made again, and runs again behind it (`remake_lost_arguments`), spending none of its own retries.
Only the owner reconstructs: a borrower that finds an object lost raises ObjectLostError.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from actorhub.exceptions import ObjectLostError
from actorhub.runtime.ids import split_store_id
from actorhub.runtime.object_ref import ObjectRef
from actorhub.tasks.submit_state import Task, exception_of
from actorhub.wire.errors import ErrorKind, RemoteError, system_error

if TYPE_CHECKING:
    from actorhub.runtime.runtime import Runtime
    from actorhub.tasks.submitter import TaskSubmitter

# What an entry costs beyond its arguments blob (the Task, its options, the dict slots).
ENTRY_OVERHEAD_BYTES = 512
# How often entries of results that left the table are dropped when no task finishes meanwhile.
_SWEEP_S = 0.5


class _Entry:
    __slots__ = ("args", "live", "nbytes", "task")

    def __init__(self, task: Task, args: list[ObjectRef[Any]], live: int) -> None:
        self.task = task
        self.args = args  # the refs inside its arguments: kept alive while it may run again
        self.live = live  # its results still in the owner's table
        self.nbytes = len(task.args_blob) + ENTRY_OVERHEAD_BYTES


class Lineage:
    """One per task submitter, made when reconstruction is on. Thread-safe."""

    def __init__(self, runtime: Runtime, submitter: TaskSubmitter, max_bytes: int) -> None:
        self._rt = runtime
        self._submitter = submitter
        self._max_bytes = max_bytes
        # Reentrant: completing an object that cannot be made again runs its callbacks here, and one
        # may finish a task waiting on it (recorded here, on the same thread).
        self._lock = threading.RLock()
        self._by_seq: dict[int, _Entry] = {}  # oldest first: the order lineage is dropped in
        self._by_object: dict[str, _Entry] = {}
        self._bytes = 0
        self._arguments: dict[int, list[ObjectRef[Any]]] = {}  # of tasks not finished yet
        # Filled by the object table under its own lock, so never by taking ours.
        self._forgotten: collections.deque[str] = collections.deque()
        self._closed = threading.Event()
        runtime.objects.on_forget = self._forgotten.append
        runtime.rebuild_lost = self.value_of
        threading.Thread(target=self._sweep_loop, name="actorhub-lineage", daemon=True).start()

    # -- recording (the submitter's hooks) ----------------------------------------------------------
    def submitted(self, task: Task, arguments: list[ObjectRef[Any]]) -> None:
        """A task was submitted with these refs inside its arguments (a copy: the caller's list
        is cleared once the task settles)."""
        if arguments and task.stream is None:
            with self._lock:
                self._arguments[task.seq] = list(arguments)

    def finished(self, task: Task) -> None:
        """The task's results are settled: keep its lineage if one of them went to a store."""
        objects = self._rt.objects
        with self._lock:
            arguments = self._arguments.pop(task.seq, [])
            if task.seq in self._by_seq or task.stream is not None:
                return  # a rerun: its entry stays as it is
            if not any(objects.is_stored(object_id) for object_id in task.object_ids):
                return
            task.lease = None  # the lease went back: an entry keeps no executor's handle
            # Only results still held: one dropped already never leaves the table again.
            held = [object_id for object_id in task.object_ids if objects.has(object_id)]
            entry = _Entry(task, arguments, len(held))
            self._by_seq[task.seq] = entry
            for object_id in held:
                self._by_object[object_id] = entry
            self._bytes += entry.nbytes
            self._drop_forgotten()
            while self._bytes > self._max_bytes and self._by_seq:
                self._drop(next(iter(self._by_seq.values())))

    def _drop_forgotten(self) -> None:
        """Under the lock: entries whose results all left the owner's table go, and with them
        the refs to their arguments (whose own entries may follow at the next drain)."""
        forgotten = self._forgotten
        while forgotten:
            entry = self._by_object.pop(forgotten.popleft(), None)
            if entry is not None:
                entry.live -= 1
                if entry.live <= 0:
                    self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if self._by_seq.pop(entry.task.seq, None) is None:
            return
        self._bytes -= entry.nbytes
        for object_id in entry.task.object_ids:
            if self._by_object.get(object_id) is entry:
                del self._by_object[object_id]
        entry.args = []

    def _sweep_loop(self) -> None:
        while not self._closed.wait(_SWEEP_S):
            with self._lock:
                self._drop_forgotten()

    def keeps(self, object_ids: Iterable[str]) -> list[bool]:
        """Whether lineage is kept for each of these objects."""
        with self._lock:
            self._drop_forgotten()
            return [object_id in self._by_object for object_id in object_ids]

    def kept_bytes(self) -> int:
        return self._bytes

    def kept_tasks(self) -> int:
        return len(self._by_seq)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._by_seq.clear()
            self._by_object.clear()
            self._arguments.clear()
            self._bytes = 0

    # -- reconstruction ----------------------------------------------------------------------------
    def value_of(self, object_id: str, timeout: float | None) -> Any:
        """get()'s read of one ready object: its value, or, when its every copy is lost, the
        value made again (or the error saying why it cannot be)."""
        rt = self._rt
        stored = rt.objects.store_id_of(object_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return rt.value_of(object_id)
        except ObjectLostError:
            if not stored or not self.recover(object_id, stored):
                raise  # not a value this process owns in a store: nothing to make again here
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        # Through get() again: waiting lends a task's CPU back, and a copy lost again is rebuilt again.
        return rt.get(rt.refs_for([object_id]), left)[0]

    def recover(self, object_id: str, stored: str) -> bool:
        """Make the owned object `object_id`, lost where it was stored (`stored`), pending again,
        and either run its task again or complete it with why it cannot be made. False if it is
        not an object this process owns as so stored (someone else recovered it meanwhile: True)."""
        alive = self._submitter.alive_node_addresses()
        reruns: list[tuple[Task, list[ObjectRef[Any]]]] = []
        with self._lock:
            self._drop_forgotten()
            recovered = self._recover(object_id, stored, alive, reruns)
        self._rerun(reruns)
        return recovered

    def _rerun(self, reruns: list[tuple[Task, list[ObjectRef[Any]]]]) -> None:
        # Outside the lock: submitting may call the hub (a node's first desk) and finish tasks.
        for task, deps in reruns:
            self._submitter.resubmit(task, deps)

    def _recover(self, object_id: str, stored: str, alive: set[str],
                 reruns: list[tuple[Task, list[ObjectRef[Any]]]]) -> bool:
        """Under the lock; the tasks to run again (after their lost arguments') go in `reruns`."""
        objects = self._rt.objects
        entry = self._by_object.get(object_id)
        if entry is None or entry.task.retries_left == 0:
            if not objects.reset_pending(object_id, stored):
                return objects.has(object_id) and not objects.is_ready(object_id)
            objects.complete_many([(object_id, None, self._why_not(object_id, entry))])
            return True
        task = entry.task
        lost = [(i, s) for i in task.object_ids if (s := objects.store_id_of(i))]
        if not objects.reset_pending(object_id, stored):
            return objects.has(object_id) and not objects.is_ready(object_id)
        for sibling, where in lost:  # the task's other results went where this one did
            if sibling != object_id:
                objects.reset_pending(sibling, where)
        if task.retries_left > 0:
            task.retries_left -= 1
        deps: list[ObjectRef[Any]] = []
        for ref in entry.args:
            arg_id = ref.hex()
            if ref.owner_address != self._rt.address:
                continue  # borrowed: its owner's to make again; the rerun fails if it is lost
            where = objects.store_id_of(arg_id)
            if objects.is_ready(arg_id) and where and self._gone(where, alive):
                self._recover(arg_id, where, alive, reruns)
            if not objects.is_ready(arg_id) or objects.read(arg_id)[1] is not None:
                deps.append(ref)
        reruns.append((task, deps))
        return True

    def remake_lost_arguments(self, task: Task, error: RemoteError) -> list[ObjectRef[Any]] | None:
        """A task failed: if because an argument owned here was lost with its node (its executor
        could not read it), make those again and return what the task must wait for; else None."""
        entry = self._by_seq.get(task.seq)  # a rerun's arguments are its entry's
        arguments = self._arguments.get(task.seq) or (entry.args if entry is not None else None)
        if not arguments or not isinstance(exception_of(error), ObjectLostError):
            return None
        alive = self._submitter.alive_node_addresses()
        objects = self._rt.objects
        reruns: list[tuple[Task, list[ObjectRef[Any]]]] = []
        deps: list[ObjectRef[Any]] = []
        with self._lock:
            self._drop_forgotten()
            for ref in arguments:
                arg_id = ref.hex()
                where = objects.store_id_of(arg_id)
                if ref.owner_address == self._rt.address and objects.is_ready(arg_id) and where and \
                        self._gone(where, alive) and self._recover(arg_id, where, alive, reruns):
                    deps.append(ref)
        self._rerun(reruns)
        return deps or None

    def _gone(self, stored: str, alive: set[str]) -> bool:
        """Whether the node whose store holds the recorded copy is gone (its address is no alive node's)."""
        node_address = split_store_id(stored)[1] or self._rt.node_address
        return node_address not in alive

    def _why_not(self, object_id: str, entry: _Entry | None) -> RemoteError:
        made_by = object_id.split(".")[1][:1] if object_id.count(".") else ""
        lost = f"object {object_id} was lost with the node that stored it and cannot be made again"
        if entry is not None:
            max_retries = entry.task.options.max_retries
            return system_error(
                f"{lost}: its task {entry.task.name} has no retries left to run again "
                f"(max_retries={max_retries}; reconstruction spends them as crashes do)",
                ErrorKind.OBJECT_RECONSTRUCTION_MAX_ATTEMPTS)
        if made_by == "t":
            return system_error(
                f"{lost}: the lineage of the task that made it was dropped (more than lineage_max_bytes="
                f"{self._max_bytes} of task specs were kept; Ray's max_lineage_bytes), or never kept (a generator's "
                "items)", ErrorKind.OBJECT_RECONSTRUCTION_LINEAGE_EVICTED)
        what = "made by put()" if made_by == "p" else "an actor call's result"
        return system_error(
            f"{lost}: it was {what}, and only the results of tasks can be made again (by running the task)",
            ErrorKind.OBJECT_RECONSTRUCTION_FAILED)

