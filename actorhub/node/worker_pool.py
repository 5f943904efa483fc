"""The node agent's worker processes: forked by the zygote, kept warm, handed to actors.

One lock (and its condition) guards every table here. Threads:
- the maintainer forks workers until `prestart` idle workers (plus one per waiting
  StartActor) exist or are on their way, at most MAX_FORKS_IN_FLIGHT at a time, and kills
  workers that never register; so a burst of StartActors is served a few forks at a time,
  in order, for as long as it lasts;
- the event reader turns the zygote's ZygoteEvents into state changes, and restarts the zygote
  when it dies (its workers die with it).
Callbacks (`on_actor_exit`) are called without the lock held.

The node agent serves on an event loop, so its waits are awaitable (`acquire`, `wait_exit`)
and hold no thread: a waiter is a future that whoever changes the tables (a registration on
the loop, the maintainer, the event reader) completes through `loop.call_soon_threadsafe`,
after settling it under the lock (handing it its worker, or saying why none will come).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable

from actorhub._proto.v1 import node_pb2
from actorhub.node.pipe_frames import FrameReader, encode_frame, write_all
from actorhub.node.workers import Counts, PoolError, State, Waiter, Worker, wake
from actorhub.node.zygote import ZygoteProcess
from actorhub.wire.records import HostedActor

log = logging.getLogger(__name__)

MAX_FORKS_IN_FLIGHT = 4
# After this many workers in a row die before registering, StartActor stops waiting and
# reports the failure instead of retrying until its timeout.
BOOT_FAILURES_TO_GIVE_UP = 3
_MAX_FORK_BACKOFF_S = 2.0
_MAX_ZYGOTE_BACKOFF_S = 10.0
_ZYGOTE_HEALTHY_AFTER_S = 10.0


class WorkerPool:
    def __init__(
        self,
        *,
        node_id: str,
        logs_dir: str,
        prestart: int,
        connect_timeout_s: float,
        zygote: ZygoteProcess,
        spawn_zygote: Callable[[], ZygoteProcess],
        on_actor_exit: Callable[[Worker], None],
    ) -> None:
        self._node_id = node_id
        self._logs_dir = logs_dir
        self._prestart = prestart
        self._connect_timeout_s = connect_timeout_s
        self._zygote = zygote
        self._spawn_zygote = spawn_zygote
        self._on_actor_exit = on_actor_exit
        self._node_address = ""

        self._cond = threading.Condition()
        self._by_id: dict[str, Worker] = {}
        self._by_pid: dict[int, Worker] = {}
        self._idle: deque[Worker] = deque()
        self._by_actor: dict[str, Worker] = {}
        self._waiters: deque[Waiter] = deque()  # StartActors waiting for a worker, in order
        self._exit_waiters: dict[Worker, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._last_registration = 0.0  # monotonic time a worker last registered
        self._stopping = False
        self._boot_failures = 0  # consecutive; reset by a registration
        self._boot_failures_total = 0
        self._last_boot_failure = ""
        self._next_fork_at = 0.0
        self._quick_zygote_deaths = 0
        self._zygote_down = False

        # Separate from _cond: a write may block for a moment and must not stall the tables.
        self._cmd_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, node_address: str) -> None:
        self._node_address = node_address
        for target, name in ((self._read_events, "zygote-events"), (self._maintain, "worker-pool")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, grace_s: float) -> None:
        """SIGKILL every worker, wait for their exits, then let the zygote go."""
        with self._cond:
            self._stopping = True
            for worker in self._by_id.values():
                worker.killed = True  # a fork still in flight is killed when it reports its pid
            victims = [w for w in self._by_id.values() if w.pid]
            self._fail_waiters_locked(f"node {self._node_id} is shutting down")
            self._cond.notify_all()
        for worker in victims:
            self._signal(worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._cond.wait_for(lambda: all(w.exited for w in victims), timeout=grace_s)
        # EOF on its command pipe makes the zygote kill and reap whatever is left, then exit.
        self._close_cmd_pipe(self._zygote)
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        process = self._zygote.process
        try:
            process.wait(timeout=max(0.5, deadline - time.monotonic()))
        except Exception:
            process.kill()
            process.wait()

    # -- RPC-facing operations ------------------------------------------------------------------

    def register(self, worker_id: str, address: str, pid: int) -> bool:
        """A worker announced itself; False when we do not know it (it should not live)."""
        with self._cond:
            worker = self._by_id.get(worker_id)
            if worker is None or worker.exited or worker.killed or self._stopping or worker.state not in (
                State.FORKING, State.STARTING,
            ):
                return False
            worker.address = address
            if not worker.pid:
                # RegisterWorker overtook the zygote's WorkerForked event.
                worker.pid = pid
                self._by_pid[pid] = worker
            worker.state = State.IDLE
            self._idle.append(worker)
            self._boot_failures = 0
            self._last_registration = time.monotonic()
            self._serve_waiters_locked()
            self._cond.notify_all()
        log.info("worker %s (pid %d) registered %.1f ms after its fork",
                 worker_id, pid, (time.monotonic() - worker.forked_at) * 1000)
        return True

    async def acquire(self, actor_id: str, incarnation: int, num_cpus: float, timeout_s: float) -> Worker:
        """Take an idle worker for an actor's constructor, waiting (holding no thread) for one
        to be forked if none is idle.

        Waiters are served in order of arrival. A waiter fails once the node is stopping; once
        BOOT_FAILURES_TO_GIVE_UP forks in a row died before registering, one of them after it
        came; or when no worker registered on the node for `timeout_s` since it came (so a long
        queue that the forks keep serving is waited out).
        """
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._stopping:
                raise PoolError(f"node {self._node_id} is shutting down")
            if self._idle and not self._waiters:
                return self._take_locked(self._idle.popleft(), actor_id, incarnation, num_cpus)
            waiter = Waiter(
                loop, loop.create_future(), actor_id, incarnation, num_cpus, time.monotonic(),
            )
            self._waiters.append(waiter)
            self._cond.notify_all()  # the maintainer forks one more
        try:
            while True:
                with self._cond:
                    if waiter.worker is not None:
                        return waiter.worker
                    if waiter.error:
                        raise PoolError(waiter.error)
                    remaining = max(waiter.since, self._last_registration) + timeout_s - time.monotonic()
                    if remaining <= 0:
                        self._forget_waiter_locked(waiter)
                        last = self._last_boot_failure
                        raise PoolError(
                            f"no worker registered on node {self._node_id} within {timeout_s:g} s"
                            + (f"; last failure: {last}" if last else "")
                        )
                await asyncio.wait((waiter.future,), timeout=remaining)
        except asyncio.CancelledError:
            # A worker handed over meanwhile goes back (unless the node is stopping).
            with self._cond:
                self._forget_waiter_locked(waiter)
                worker = waiter.worker
                if worker is not None:
                    waiter.worker = None
                    self._give_back_locked(worker)
            raise

    def _take_locked(self, worker: Worker, actor_id: str, incarnation: int, num_cpus: float) -> Worker:
        worker.state = State.TAKEN
        worker.actor_id, worker.incarnation = actor_id, incarnation
        worker.num_cpus = num_cpus
        self._by_actor[actor_id] = worker
        return worker

    def _give_back_locked(self, worker: Worker) -> None:
        """A worker taken by a waiter that left before using it: idle again (if still fit)."""
        if self._by_actor.get(worker.actor_id) is worker:
            del self._by_actor[worker.actor_id]
        if worker.exited or worker.killed or self._stopping:
            return
        worker.state = State.IDLE
        worker.actor_id, worker.incarnation, worker.num_cpus = "", 0, 0.0
        self._idle.appendleft(worker)
        self._serve_waiters_locked()
        self._cond.notify_all()

    def _serve_waiters_locked(self) -> None:
        """Hand idle workers to waiters, in order of arrival."""
        while self._idle and self._waiters:
            waiter = self._waiters.popleft()
            waiter.worker = self._take_locked(
                self._idle.popleft(), waiter.actor_id, waiter.incarnation, waiter.num_cpus,
            )
            wake(waiter.loop, waiter.future)

    def _forget_waiter_locked(self, waiter: Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
            self._cond.notify_all()

    def _fail_waiters_locked(self, why: str) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.error = why
            wake(waiter.loop, waiter.future)

    def activate(self, worker: Worker) -> bool:
        """The constructor succeeded: from now on the worker's exit is the actor's death."""
        with self._cond:
            if worker.exited:
                return False
            worker.state = State.ACTOR
            return True

    def find_actor(self, actor_id: str, incarnation: int) -> Worker | None:
        with self._cond:
            worker = self._by_actor.get(actor_id)
            if worker is None or worker.incarnation != incarnation or worker.exited:
                return None
            return worker

    def hosted(self) -> list[HostedActor]:
        """The actors this node runs or is starting (a StartActor in a constructor or waiting
        for a worker), as a node registering again after losing the hub reports them."""
        with self._cond:
            hosted = [
                HostedActor(
                    actor_id=w.actor_id, incarnation=w.incarnation,
                    address=w.address if w.state is State.ACTOR else "",
                    worker_id=w.worker_id, pid=w.pid, starting=w.state is not State.ACTOR, gpu_ids=w.gpu_ids,
                )
                for w in self._by_actor.values() if not (w.exited or w.killed)
            ]
            waiting = self._waiters
            hosted += [HostedActor(actor_id=a.actor_id, incarnation=a.incarnation, starting=True) for a in waiting]
            return hosted

    def kill(self, worker: Worker) -> None:
        with self._cond:
            if worker.exited:
                return
            worker.killed = True
        self._signal(worker.pid, signal.SIGKILL)

    async def wait_exit(self, worker: Worker, timeout_s: float) -> bool:
        """True once the zygote reported the worker's exit, False after `timeout_s`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._cond:
            if worker.exited:
                return True
            self._exit_waiters.setdefault(worker, []).append(entry)
        try:
            await asyncio.wait((future,), timeout=timeout_s)
        finally:
            with self._cond:
                waiting = self._exit_waiters.get(worker)
                if waiting is not None and entry in waiting:
                    waiting.remove(entry)
                    if not waiting:
                        del self._exit_waiters[worker]
        with self._cond:
            return worker.exited

    def counts(self) -> Counts:
        with self._cond:
            counts = Counts(idle=len(self._idle))
            for worker in self._by_id.values():
                if worker.state in (State.TAKEN, State.ACTOR):
                    counts.actors += 1
                    counts.cpus_in_use += worker.num_cpus
            return counts

    # -- zygote pipe ----------------------------------------------------------------------------

    def _send(self, command: node_pb2.ZygoteCommand) -> None:
        frame = encode_frame(command.SerializeToString())
        with self._cmd_lock:
            fd = self._zygote.cmd_fd
            if fd < 0:
                return
            try:
                write_all(fd, frame)
            except OSError:
                pass  # the zygote died; the event reader sees its EOF and handles it

    def _signal(self, pid: int, sig: int) -> None:
        # Through the zygote, which only signals its own unreaped children: an os.kill from
        # here could hit an unrelated process that reused the pid of a reaped worker.
        if pid:
            self._send(node_pb2.ZygoteCommand(signal=node_pb2.SignalWorker(pid=pid, signal=sig)))

    def _close_cmd_pipe(self, zygote: ZygoteProcess) -> None:
        with self._cmd_lock:
            if zygote.cmd_fd >= 0:
                os.close(zygote.cmd_fd)
                zygote.cmd_fd = -1

    # -- the maintainer thread ------------------------------------------------------------------

    def _maintain(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                forks, stuck, wait_s = self._plan_locked(time.monotonic())
                if not forks and not stuck:
                    self._cond.wait(wait_s)
                    continue
            for worker in stuck:
                log.warning("worker %s (pid %d) did not register within %g s; killing it",
                            worker.worker_id, worker.pid, self._connect_timeout_s)
                self._signal(worker.pid, signal.SIGKILL)
            for worker in forks:
                self._send(node_pb2.ZygoteCommand(fork=node_pb2.ForkWorker(
                    worker_id=worker.worker_id, node_id=self._node_id, node_address=self._node_address,
                )))

    def _plan_locked(self, now: float) -> tuple[list[Worker], list[Worker], float]:
        wait_s = 1.0
        booting = [w for w in self._by_id.values() if w.state in (State.FORKING, State.STARTING)]
        stuck = []
        for worker in booting:
            if worker.killed:
                continue
            expires = worker.forked_at + self._connect_timeout_s
            if now < expires:
                wait_s = min(wait_s, expires - now)
                continue
            worker.killed = True
            self._note_boot_failure_locked(worker, f"did not register within {self._connect_timeout_s:g} s")
            if worker.pid:
                stuck.append(worker)  # forgotten once the zygote reports its exit
            else:
                # The zygote never answered the fork; a late WorkerForked gets a SIGKILL.
                worker.exited = True
                del self._by_id[worker.worker_id]
        if self._zygote_down:
            return [], stuck, wait_s  # a fork sent now would be lost with the dead zygote's pipe
        if now < self._next_fork_at:
            return [], stuck, min(wait_s, self._next_fork_at - now)
        live_booting = sum(1 for w in booting if not w.killed)
        missing = self._prestart + len(self._waiters) - len(self._idle) - live_booting
        count = min(missing, MAX_FORKS_IN_FLIGHT - live_booting)
        forks = []
        for _ in range(max(0, count)):
            worker = Worker(worker_id=os.urandom(14).hex(), forked_at=now)
            self._by_id[worker.worker_id] = worker
            forks.append(worker)
        return forks, stuck, wait_s

    def _note_boot_failure_locked(self, worker: Worker, why: str) -> None:
        self._boot_failures += 1
        self._boot_failures_total += 1
        self._last_boot_failure = (
            f"worker {worker.worker_id} {why}; see {self._logs_dir}/worker-{worker.worker_id}.err"
        )
        backoff = min(_MAX_FORK_BACKOFF_S, 0.05 * 2 ** self._boot_failures)
        self._next_fork_at = time.monotonic() + backoff
        if self._boot_failures >= BOOT_FAILURES_TO_GIVE_UP:
            # Every waiter has now seen a boot failure since it came, the last of too many.
            self._fail_waiters_locked(
                f"worker processes on node {self._node_id} fail to start: {self._last_boot_failure}"
            )
        self._cond.notify_all()

    # -- the event reader thread ----------------------------------------------------------------

    def _read_events(self) -> None:
        while True:
            zygote = self._zygote
            reader = FrameReader()
            while True:
                try:
                    data = os.read(zygote.event_fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                try:
                    frames = reader.feed(data)
                except ValueError:
                    log.exception("corrupt zygote event stream; restarting the zygote")
                    zygote.process.kill()
                    break
                for payload in frames:
                    self._on_event(node_pb2.ZygoteEvent.FromString(payload))
            if not self._on_zygote_gone(zygote):
                return

    def _on_event(self, event: node_pb2.ZygoteEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "forked":
            self._on_forked(event.forked.worker_id, event.forked.pid)
        elif kind == "exited":
            exited = event.exited
            with self._cond:
                worker = self._by_pid.get(exited.pid)
                if worker is None:
                    return
                worker.exit_code, worker.signal = exited.exit_code, exited.signal
                reported = self._drop_locked(worker)
            self._after_exit([worker] if reported else [])

    def _on_forked(self, worker_id: str, pid: int) -> None:
        with self._cond:
            worker = self._by_id.get(worker_id)
            if worker is not None and pid == 0:
                worker.exit_code = 1
                self._drop_locked(worker, why="could not be forked (see the zygote log)")
                return
            if worker is not None:
                worker.pid = pid
                self._by_pid[pid] = worker
                if worker.state is State.FORKING:
                    worker.state = State.STARTING
                if not worker.killed:
                    return
        # A worker we gave up on, or one forked as the node was stopping.
        self._signal(pid, signal.SIGKILL)

    def _drop_locked(self, worker: Worker, why: str = "") -> bool:
        """Forget an exited worker; True when its exit must be reported to the hub."""
        worker.exited = True
        for loop, future in self._exit_waiters.pop(worker, ()):
            wake(loop, future)
        self._by_id.pop(worker.worker_id, None)
        if worker.pid:
            self._by_pid.pop(worker.pid, None)
        if self._by_actor.get(worker.actor_id) is worker:
            del self._by_actor[worker.actor_id]
        if worker.state is State.IDLE:
            with contextlib.suppress(ValueError):
                self._idle.remove(worker)
        elif worker.state in (State.FORKING, State.STARTING) and not worker.killed and not self._stopping:
            why = why or f"ended before registering ({worker.describe_exit()})"
            self._note_boot_failure_locked(worker, why)
        self._cond.notify_all()
        # A death during the constructor is the StartActor reply's news, not a report.
        return worker.state is State.ACTOR and not self._stopping

    def _after_exit(self, reported: list[Worker]) -> None:
        for worker in reported:
            log.info("actor %s (incarnation %d) lost its worker %s: %s", worker.actor_id,
                     worker.incarnation, worker.worker_id, worker.describe_exit())
            try:
                self._on_actor_exit(worker)
            except Exception:
                log.exception("reporting the exit of worker %s failed", worker.worker_id)

    def _on_zygote_gone(self, zygote: ZygoteProcess) -> bool:
        """The zygote's event pipe closed. Returns whether a new zygote took its place."""
        with self._cond:
            self._zygote_down = True
        os.close(zygote.event_fd)
        self._close_cmd_pipe(zygote)
        try:
            returncode = zygote.process.wait(timeout=5)
        except Exception:
            zygote.process.kill()
            returncode = zygote.process.wait()
        with self._cond:
            # PR_SET_PDEATHSIG killed every worker with the zygote.
            orphans = list(self._by_id.values())
            reported = []
            for worker in orphans:
                if worker.state is State.FORKING:
                    worker.killed = True  # its fork never happened; not the worker's fault
                worker.signal = worker.signal or signal.SIGKILL
                if self._drop_locked(worker, why="died with the zygote"):
                    reported.append(worker)
            stopping = self._stopping
        if stopping:
            self._after_exit(reported)
            return False
        log.warning("the zygote (pid %d) exited with %s; %d worker(s) died with it; restarting it",
                    zygote.process.pid, returncode, len(orphans))
        self._wait_gone([w.pid for w in orphans if w.pid])
        self._after_exit(reported)
        # A zygote that keeps dying soon after its start must not be restarted in a tight loop.
        if time.monotonic() - zygote.started_at < _ZYGOTE_HEALTHY_AFTER_S:
            self._quick_zygote_deaths += 1
            time.sleep(min(_MAX_ZYGOTE_BACKOFF_S, 0.1 * 2 ** self._quick_zygote_deaths))
        else:
            self._quick_zygote_deaths = 0
        try:
            replacement = self._spawn_zygote()
        except Exception:
            log.exception("cannot restart the zygote; the node can no longer start workers")
            return False
        with self._cmd_lock, self._cond:
            self._zygote = replacement
            self._zygote_down = False
            stale = self._stopping
            self._cond.notify_all()
        if stale:
            self._close_cmd_pipe(replacement)  # shutdown began meanwhile: let it exit at once
        return True

    @staticmethod
    def _wait_gone(pids: list[int], timeout_s: float = 2.0) -> None:
        """Wait until PDEATHSIG has taken the orphaned workers, so a report means 'gone'."""
        deadline = time.monotonic() + timeout_s
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    with open(f"/proc/{pid}/stat", "rb") as f:
                        # The state letter follows the parenthesised command name.
                        if f.read().rpartition(b")")[2].split()[0] == b"Z":
                            break
                except (OSError, IndexError):
                    break
                time.sleep(0.005)
