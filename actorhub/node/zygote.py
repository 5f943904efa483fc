"""The zygote: a small process per node that forks worker processes on request.

Booting a Python interpreter and importing grpc, protobuf, cloudpickle and pydantic takes
hundreds of milliseconds; forking a process that already has them takes a few. The zygote
imports them once and then only forks. It must never create a gRPC channel, server or any
thread: gRPC's threads and locks do not survive fork(), so the zygote talks to its node agent
over two plain pipes (pipe_frames.py) and every worker starts its own gRPC machinery after
the fork.

Lifetime: the zygote dies with its node agent (PR_SET_PDEATHSIG, and EOF on the command
pipe), and every worker dies with the zygote (PR_SET_PDEATHSIG again), so killing the node
agent leaves no worker behind. Each worker leads its own process group, which holds whatever
it starts (an actor's subprocesses): the zygote signals the whole group, and SIGKILLs it when
the worker ends for any reason, before reaping the worker, so an actor's children end with it.

This module's top level imports only the standard library: the node agent imports it to
spawn the zygote before it imports grpc itself, so that both interpreters boot in parallel.

actorhub's public API (every user module imports it) and the workers' metrics are preloaded
before the first fork, so that first workers serve a first call without imports; numpy (100 ms
of CPU) once no command came for `QUIET_S`, or at an idle moment after `BURST_FORKS` forks: a
starting cluster's hub and node agent need the CPU. A node agent may `fork()` its first zygote
after importing the preload (all but the API) itself: no second interpreter boot and imports.
Replacements are spawned: by then the node agent has gRPC threads.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from actorhub.cluster.lifetime import set_parent_death_signal
from actorhub.node.pipe_frames import FrameReader, encode_frame, write_all

if TYPE_CHECKING:
    from actorhub._proto.v1 import node_pb2

CHILD_ENTRY_ENV = "ACTORHUB_ZYGOTE_CHILD_ENTRY"
DEFAULT_CHILD_ENTRY = "actorhub.worker.service:run_worker"

QUIET_S, BURST_FORKS = 0.5, 8  # when numpy's preload runs: see the module docstring

# ---------------------------------------------------------------------------------------------
# Starting a zygote (runs in the node agent).


@dataclass
class ForkedProcess:
    """A child this process forked, with what a node agent uses of Popen: pid, poll, wait, kill."""

    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        try:
            if self.returncode is None and (found := os.waitpid(self.pid, os.WNOHANG))[0]:
                self.returncode = os.waitstatus_to_exitcode(found[1])
        except ChildProcessError:  # reaped elsewhere: its status is lost
            self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"zygote {self.pid}", timeout or 0.0)
            time.sleep(0.005)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


@dataclass
class ZygoteProcess:
    """The node agent's end of a zygote: the process and the two pipe ends it keeps."""

    process: subprocess.Popen[bytes] | ForkedProcess
    cmd_fd: int  # write end: ZygoteCommand frames
    event_fd: int  # read end: ZygoteEvent frames
    started_at: float


def spawn(
    *, session_dir: Path, hub_address: str, bind_host: str | None, log_path: Path, python: str = sys.executable,
) -> ZygoteProcess:
    (cmd_r, cmd_w), (event_r, event_w) = os.pipe(), os.pipe()
    argv = [
        python, "-m", "actorhub.node.zygote",
        "--session-dir", str(session_dir),
        "--hub-address", hub_address,
        "--cmd-fd", str(cmd_r),
        "--event-fd", str(event_w),
        # getppid() after prctl tells whether the starter died before PDEATHSIG was armed.
        "--parent-pid", str(os.getpid()),
    ]
    if bind_host is not None:
        argv += ["--bind-host", bind_host]
    try:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, pass_fds=(cmd_r, event_w), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log)
    except BaseException:
        for fd in (cmd_w, event_r):
            os.close(fd)
        raise
    finally:
        # The zygote holds these ends now; keeping them here would hide its EOFs.
        os.close(cmd_r)
        os.close(event_w)
    return ZygoteProcess(process, cmd_w, event_r, time.monotonic())


def fork(*, session_dir: Path, hub_address: str, bind_host: str | None, log_path: Path) -> ZygoteProcess:
    """Fork a zygote from this process after importing the preload here (module docstring); call
    it before this process starts a thread, gRPC channel or server. Output goes to `log_path`."""
    from actorhub.config import Config
    entry_spec = os.environ.get(CHILD_ENTRY_ENV) or DEFAULT_CHILD_ENTRY
    entry = _preload(entry_spec)
    boot = _Boot(session_dir, hub_address, Config.load(bind_host=bind_host).bind_host, entry_spec)
    (cmd_r, cmd_w), (event_r, event_w) = os.pipe(), os.pipe()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()  # a failure ends the node agent's start, these descriptors with it
    if pid:
        for fd in (cmd_r, event_w, log):
            os.close(fd)
        return ZygoteProcess(ForkedProcess(pid), cmd_w, event_r, time.monotonic())
    try:  # the zygote: what a spawned one's main() does after its imports
        for fd in (1, 2):
            os.dup2(log, fd)
        low, high = sorted((cmd_r, event_w))  # only the pipes stay open: workers inherit the rest
        for start, end in ((3, low), (low + 1, high), (high + 1, os.sysconf("SC_OPEN_MAX"))):
            os.closerange(start, end)
        set_parent_death_signal(signal.SIGKILL)  # 1: the node agent died before it was armed
        _flush_and_exit(_serve(cmd_r, event_w, boot, entry) if os.getppid() == parent else 1)
    except BaseException:
        traceback.print_exc()
    _flush_and_exit(1)


# ---------------------------------------------------------------------------------------------
# The zygote process itself.


def _log(message: str) -> None:
    # Plain writes, not `logging`: handlers configured here would be inherited by every worker.
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} zygote[{os.getpid()}] {message}\n")
    sys.stderr.flush()


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _resolve_entry(spec: str) -> tuple[Callable[[Any], object], type]:
    """The child entry function and the WorkerBoot class it expects."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"{CHILD_ENTRY_ENV} must look like 'module:function', got {spec!r}")
    module = importlib.import_module(module_name)
    entry = getattr(module, func_name)
    boot_cls = getattr(module, "WorkerBoot", None)
    if boot_cls is None:
        from actorhub.worker.service import WorkerBoot

        boot_cls = WorkerBoot
    return entry, boot_cls


def _preload(entry_spec: str) -> tuple[Callable[[Any], object], type] | None:
    """Import what every worker needs, once, so that forked workers start warm (numpy later)."""
    protos = ("common_pb2", "hub_pb2", "hub_pb2_grpc", "node_pb2", "node_pb2_grpc", "worker_pb2", "worker_pb2_grpc")
    for module in ("cloudpickle", "google.protobuf", "grpc", "pydantic", *(f"actorhub._proto.v1.{p}" for p in protos),
                   "actorhub.metrics.worker_metrics"):
        importlib.import_module(module)
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401  (every worker's server loop runs on it: 8 ms each otherwise)
    try:
        return _resolve_entry(entry_spec)
    except Exception:
        # Keep serving: each child retries the import and its .err log shows why it fails,
        # which is where a user looks when an actor does not start.
        _log(f"cannot import the worker entry {entry_spec!r}:\n{traceback.format_exc()}")
        return None


def _preload_later() -> None:
    """The rest of the preload, once the zygote is quiet (see the module's docstring)."""
    with contextlib.suppress(ImportError):
        # numpy's BLAS may start a native thread pool here; OpenBLAS and MKL reset it in
        # the child through pthread_atfork, as they must for multiprocessing's fork.
        # numpy 2 imports numpy.random on first use, which every worker's reseed is (~12 ms).
        import numpy.random  # noqa: F401
    gc.freeze()  # as after the first preload: out of the workers' collections


@dataclass(frozen=True)
class _Boot:
    """What the zygote passes into every worker besides the per-fork fields."""

    session_dir: Path
    hub_address: str
    bind_host: str
    entry_spec: str


class Zygote:
    def __init__(
        self, cmd_fd: int, event_fd: int, boot: _Boot, entry: tuple[Callable[[Any], object], type] | None,
        deferred: Callable[[], None] | None = None,
    ) -> None:
        from actorhub._proto.v1 import node_pb2

        self._pb = node_pb2
        self._pid = os.getpid()
        self._cmd_fd = cmd_fd
        self._event_fd = event_fd
        self._boot = boot
        self._entry = entry
        self._children: dict[int, str] = {}
        self._reader = FrameReader()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self._events_broken = False
        self._deferred = deferred  # run once a worker is forked and the zygote is idle (serve)
        self._forks, self._last_command = 0, time.monotonic()

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> int:
        # A Python-level handler is needed for the C handler to write to the wakeup fd; the
        # work happens in the loop, where fork and waitpid cannot race each other.
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.signal(signal.SIGTERM, _ignore_signal)
        # Ctrl-C in a terminal reaches the whole process group; the node agent decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            while not self._stop:
                idle = self._until_preload()
                readable, _, _ = select.select([self._cmd_fd, self._wake_r], [], [], idle)
                if not readable and idle is not None and self._deferred is not None:  # it is due
                    deferred, self._deferred = self._deferred, None
                    deferred()
                if self._wake_r in readable:
                    self._on_signals()
                if self._cmd_fd in readable and not self._stop:
                    self._on_commands()
        finally:
            self._kill_all()
        return 0

    def _until_preload(self) -> float | None:
        """How long select() may sleep before the deferred preload is due; None: not yet due."""
        if self._deferred is None or not self._forks:
            return None
        if self._forks >= BURST_FORKS:
            return 0.0  # a burst: at its first idle moment
        return max(0.0, self._last_command + QUIET_S - time.monotonic())

    def _on_signals(self) -> None:
        received = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._wake_r, 256):
                received += chunk
        if int(signal.SIGTERM) in received:
            self._stop = True
        # Reap even when the byte was lost to a full wakeup pipe: waitpid is the truth.
        self._reap(block=False)

    def _on_commands(self) -> None:
        data = os.read(self._cmd_fd, 65536)
        if not data:
            # The node agent is gone (or shutting down): take every worker with us.
            self._stop = True
            return
        self._last_command = time.monotonic()
        for payload in self._reader.feed(data):
            command = self._pb.ZygoteCommand.FromString(payload)
            kind = command.WhichOneof("command")
            if kind == "fork":
                self._fork(command.fork)
            elif kind == "signal":
                self._signal(command.signal.pid, command.signal.signal)

    def _emit(self, event: node_pb2.ZygoteEvent) -> None:
        if self._events_broken:
            return
        try:
            write_all(self._event_fd, encode_frame(event.SerializeToString()))
        except OSError:
            # Nobody reads events any more: the node agent died.
            self._events_broken = True
            self._stop = True

    # -- commands ---------------------------------------------------------------------------

    def _signal(self, pid: int, sig: int) -> None:
        # Only our own unreaped children: a pid from a stale command may belong to a stranger.
        # An unreaped child's pid (and so the group it leads) cannot be reused.
        if pid in self._children:
            _signal_group(pid, sig)

    def _fork(self, request: node_pb2.ForkWorker) -> None:
        # Buffered output would be written twice, once by each process.
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            _log(f"fork for worker {request.worker_id} failed: {e}")
            # pid 0 in WorkerForked means the fork failed (the protocol has no other way).
            self._emit(self._pb.ZygoteEvent(forked=self._pb.WorkerForked(worker_id=request.worker_id, pid=0)))
            return
        if pid == 0:
            self._become_worker(request.worker_id, request.node_id, request.node_address)
        # The child does the same first thing; doing it here too means the group exists before
        # any SignalWorker for this pid can arrive. EACCES/ESRCH: the child did it, or is gone.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self._children[pid] = request.worker_id
        self._forks += 1
        self._emit(self._pb.ZygoteEvent(forked=self._pb.WorkerForked(worker_id=request.worker_id, pid=pid)))

    # -- children ---------------------------------------------------------------------------

    def _reap(self, *, block: bool) -> None:
        while not block or self._children:
            # Look without reaping first: while the worker is a zombie its group id cannot be
            # reused, so what it started can still be killed safely, and must be, before the
            # pid is released.
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG))
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if found is None:
                return
            if found.si_pid in self._children:
                _signal_group(found.si_pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(found.si_pid, 0)
            except ChildProcessError:
                continue
            self._children.pop(pid, None)
            if os.WIFSIGNALED(status):
                exit_code, sig = 0, os.WTERMSIG(status)
            else:
                exit_code, sig = os.WEXITSTATUS(status), 0
            self._emit(
                self._pb.ZygoteEvent(exited=self._pb.WorkerExited(pid=pid, exit_code=exit_code, signal=sig))
            )

    def _kill_all(self) -> None:
        for pid in list(self._children):
            _signal_group(pid, signal.SIGKILL)
        self._reap(block=True)

    def _become_worker(self, worker_id: str, node_id: str, node_address: str) -> None:
        """Runs in the forked child; never returns."""
        code = 1
        try:
            # Before anything else: the group holds what this worker starts, so that a kill
            # (or the worker's end) takes all of it. The zygote does the same from its side.
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd in (self._cmd_fd, self._event_fd, self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            # The node's process group no longer holds this worker: killpg of the node kills the
            # zygote, and this death signal takes the worker with it.
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != self._pid:
                os._exit(1)  # the zygote died before the death signal was armed
            _redirect_output(self._boot.session_dir / "logs", worker_id)
            _reseed_numpy()
            entry, boot_cls = self._entry or _resolve_entry(self._boot.entry_spec)
            entry(
                boot_cls(
                    worker_id=worker_id,
                    node_id=node_id,
                    node_address=node_address,
                    hub_address=self._boot.hub_address,
                    session_dir=self._boot.session_dir,
                    bind_host=self._boot.bind_host,
                )
            )
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            _flush_and_exit(code)


def _flush_and_exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads, or `pid` alone if it has no group of its own yet.

    Only for the zygote's own unreaped children: their pid, and so their group id, cannot have
    been reused."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        pass


def _redirect_output(logs: Path, worker_id: str) -> None:
    for fd, suffix in ((1, "out"), (2, "err")):
        target = os.open(logs / f"worker-{worker_id}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)
    # Line-buffered so that a crash loses at most a partial line and the driver's log
    # streaming sees output as it is printed.
    sys.stdout = _line_buffered(1)
    sys.stderr = _line_buffered(2)


def _line_buffered(fd: int) -> IO[str]:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _reseed_numpy() -> None:
    # Every worker would otherwise draw the same "random" numbers from numpy's global
    # generator; a freshly booted interpreter would not (Python's `random` reseeds itself).
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            numpy.random.seed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actorhub.node.zygote")
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--hub-address", required=True)
    parser.add_argument("--bind-host", default=None)
    parser.add_argument("--cmd-fd", required=True, type=int)
    parser.add_argument("--event-fd", required=True, type=int)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)

    expected_parent = args.parent_pid or os.getppid()
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != expected_parent:
        return 1  # the node agent died before the death signal was armed

    from actorhub.config import Config

    bind_host = Config.load(bind_host=args.bind_host).bind_host
    # The only environment read below the process edge, and only tests set it.
    entry_spec = os.environ.get(CHILD_ENTRY_ENV) or DEFAULT_CHILD_ENTRY
    entry = _preload(entry_spec)
    return _serve(args.cmd_fd, args.event_fd, _Boot(args.session_dir, args.hub_address, bind_host, entry_spec), entry)


def _serve(cmd_fd: int, event_fd: int, boot: _Boot, entry: tuple[Callable[[Any], object], type] | None) -> int:
    import actorhub  # here, not in `_preload`: a node agent forking its zygote needs no API
    for name in (*dict.fromkeys(actorhub._EXPORTS.values()), "actorhub.exceptions", "actorhub.util",
                 "grpc._channel", "grpc.experimental"):
        importlib.import_module(name)
    # Everything imported so far lives as long as the process: move it out of the collector's
    # reach, so workers neither scan it on every full collection nor touch (and so copy) its
    # pages after the fork.
    gc.freeze()
    threads = _thread_count()
    if threads > 1:
        _log(f"warning: {threads} threads exist before the first fork; an import started them")
    return Zygote(cmd_fd, event_fd, boot, entry, deferred=_preload_later).serve()


if __name__ == "__main__":
    sys.exit(main())
