"""`python -m actorhub.hub.supervisor --session-dir D --port P --bind-host H [--store PATH]`:
keeps the hub running.

The launcher starts this process instead of the hub; it starts the hub as its child and
restarts it with `--recover` (on the same port, from the same store) when it dies after it
served. It ends when the hub ends on purpose (exit 0: Shutdown RPC or SIGTERM), and on
SIGTERM/SIGINT, which it forwards to the hub.

- A first hub that exits before it served is a start failure: the supervisor exits with the
  hub's code (1 for a signal), and the launcher reports it with the logs.
- A hub that served for 10 s or more is restarted at once; one that died sooner is in a crash
  loop, restarted after 0.1, 0.2, 0.4 ... s, at most 10 s. A hub that refuses its store (exit 3)
  is retried on the same backoff: an operator may repair the store meanwhile.
- A standby hub waits beside the serving one (`--standby-fd`): a second hub process that has
  done its imports (most of a hub's start) and blocks until told to go. A restart promotes it:
  it then only loads the store and binds, so the cluster's control plane is back in tens of
  milliseconds rather than the half second or more of a cold start. It is spawned 10 s after
  the hub serves, so that it does not compete with a cluster's start for the CPU.
- The hub runs in this process's group and kills itself when this process dies
  (`--supervisor-pid`, PR_SET_PDEATHSIG), so killing the group or this process stops both.

It is on the path of every `init()`, which waits for the hub it starts: the launcher runs it
as a file with `python -I -S` (no site-packages), and it imports little of the standard library
(no argparse, subprocess, pathlib or typing: it parses its few flags and spawns with
`os.posix_spawn`), so that the hub is spawned about 20 ms after this process is. It never
polls: it sleeps in select() on the hub's ready pipe and a self-pipe that signals (SIGCHLD,
SIGTERM) write to.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from types import FrameType

TYPE_CHECKING = False  # typing itself is not needed at run time (a few ms of this process's boot)
if TYPE_CHECKING:
    from typing import IO, NoReturn

# The session's names (actorhub.cluster.session), spelled out here: importing that module
# (secrets, hmac) would add a fifth to this process's boot, which is on the path of init().
PID_FILE = "hub-supervisor.pid"
LOG_NAME = "hub-supervisor.log"
HUB_OUT = "hub.out"
ADDRESS_FILE = "hub_address"
STORE_REFUSED = 3

# A hub that served this long was healthy: its death is an accident, not a crash loop.
HEALTHY_UPTIME_S = 10.0
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 10.0
STOP_TIMEOUT_S = 10.0
# select() wakes on every event through the pipes; this bound only guards against a missed one.
_BACKSTOP_S = 1.0
# How long after a hub serves its standby is spawned: after a cluster's start, whose CPU it
# would otherwise share (a hub that dies sooner is in a crash loop, restarted cold anyway).
STANDBY_DELAY_S = 10.0


USAGE = """usage: python -m actorhub.hub.supervisor --session-dir DIR --port PORT [--bind-host HOST]
       [--store PATH] [--no-standby]
  --port: the hub's port; 0: a free one, then kept across restarts
  --store: the hub's store (default: in the session)
  --no-standby: keep no standby hub (restarts boot a new one)"""


class Args:
    """The command line. Parsed by hand: argparse's imports would double this process's boot."""

    __slots__ = ("bind_host", "hub_module", "no_standby", "port", "session_dir", "standby_delay_s", "store")

    def __init__(self) -> None:
        self.session_dir = ""
        self.port = -1
        self.bind_host = "127.0.0.1"
        self.store: str | None = None
        self.hub_module = "actorhub.hub"  # tests run a stand-in hub that honours the same flags
        self.no_standby = False
        self.standby_delay_s = STANDBY_DELAY_S


_VALUED = {"--session-dir": "session_dir", "--port": "port", "--bind-host": "bind_host", "--store": "store",
           "--hub-module": "hub_module", "--standby-delay-s": "standby_delay_s"}


def _usage_error(message: str) -> NoReturn:
    print(f"{USAGE}\npython -m actorhub.hub.supervisor: error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse(argv: list[str] | None) -> Args:
    args = Args()
    words = iter(sys.argv[1:] if argv is None else argv)
    for word in words:
        if word in ("-h", "--help"):
            print(f"{USAGE}\n\n{__doc__}")
            sys.exit(0)
        if word == "--no-standby":
            args.no_standby = True
            continue
        flag, equals, value = word.partition("=")
        if flag not in _VALUED:
            _usage_error(f"unrecognized argument: {word}")
        if not equals and (value := next(words, "")) == "":
            _usage_error(f"argument {flag}: expected one argument")
        try:
            converted = int(value) if flag == "--port" else float(value) if flag == "--standby-delay-s" else value
        except ValueError:
            _usage_error(f"argument {flag}: invalid value: {value!r}")
        setattr(args, _VALUED[flag], converted)
    if not args.session_dir or args.port < 0:
        _usage_error("the arguments --session-dir and --port are required")
    return args


class _Process:
    """A child started with os.posix_spawn: what the supervisor uses of subprocess.Popen."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (nothing here does): its status is lost
                pid, status = self.pid, signal.SIGKILL
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def wait_for(self, timeout: float) -> int | None:
        """The exit status; None when `timeout` (s) passed first."""
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.01))
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGKILL)


class _Log:
    """Plain timestamped lines, appended and flushed one by one: the supervisor may be killed."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file: IO[str] = open(path, "a", buffering=1)  # kept open for the process's life

    def __call__(self, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        with contextlib.suppress(OSError):
            self._file.write(f"{stamp} {message}\n")

    def close(self) -> None:
        self._file.close()


class _Hub:
    """A hub process we started and what we know of it (a plain class: dataclasses import slowly)."""

    __slots__ = ("go_w", "proc", "ready_at", "ready_r", "started_at")

    def __init__(self, proc: _Process, ready_r: int, go_w: int | None) -> None:
        self.proc = proc
        self.ready_r: int | None = ready_r  # the read end of its ready pipe, until read to its end
        self.go_w = go_w  # a standby's: one byte promotes it, EOF ends it
        self.started_at = time.monotonic()
        self.ready_at: float | None = None

    def served_s(self, now: float) -> float:
        return now - self.ready_at if self.ready_at is not None else 0.0


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def backoff_s(quick_deaths: int) -> float:
    """The pause before the restart that follows `quick_deaths` deaths in a row within
    HEALTHY_UPTIME_S of their start (0: the last hub was healthy, restart at once)."""
    if quick_deaths <= 0:
        return 0.0
    return float(min(FIRST_BACKOFF_S * 2 ** min(quick_deaths - 1, 16), MAX_BACKOFF_S))


class Supervisor:
    def __init__(self, args: Args) -> None:
        self.session = args.session_dir
        self.logs = os.path.join(self.session, "logs")
        self.port = args.port
        self.bind_host = args.bind_host
        self.store = args.store
        self.hub_module = args.hub_module
        self.use_standby = not args.no_standby
        self.standby_delay_s = args.standby_delay_s
        self.standby: _Hub | None = None
        self.log = _Log(os.path.join(self.logs, LOG_NAME))
        self.stop_signal: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    # -- signals --------------------------------------------------------------------------------
    def install_signals(self) -> None:
        # The C-level handler writes each signal's number to the pipe, which wakes select().
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        # A Python handler (not SIG_DFL, which ignores it) so that the wakeup fd sees it.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def _wait(self, fds: list[int], timeout: float | None) -> list[int]:
        """Sleep until one of `fds` or the signal pipe is readable, or `timeout` (s) passes."""
        bounded = _BACKSTOP_S if timeout is None else max(0.0, min(timeout, _BACKSTOP_S))
        readable, _, _ = select.select([self._wake_r, *fds], [], [], bounded)
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        return [fd for fd in readable if fd != self._wake_r]

    # -- the hub --------------------------------------------------------------------------------
    def _hub_argv(self, recover: bool) -> list[str]:
        argv = [sys.executable, "-m", self.hub_module, "--session-dir", self.session,
                "--port", str(self.port), "--bind-host", self.bind_host]
        if self.store is not None:
            argv += ["--store", self.store]
        if recover:
            argv.append("--recover")
        return argv

    def _spawn(self, recover: bool, standby: bool = False) -> _Hub:
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe() if standby else (None, None)
        passed = (ready_w,) if go_r is None else (ready_w, go_r)
        try:
            argv = [*self._hub_argv(recover), "--supervisor-pid", str(os.getpid()), "--ready-fd", str(ready_w)]
            if go_r is not None:
                argv += ["--standby-fd", str(go_r)]
            out = os.open(os.path.join(self.logs, HUB_OUT), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                          0o644)
            try:
                for fd in passed:
                    os.set_inheritable(fd, True)  # the only descriptors it inherits besides stdio
                # Not a new session: the hub stays in this group, so killing the group stops both.
                # The signals Python ignores go back to their defaults, as Popen's restore_signals.
                proc = _Process(os.posix_spawn(sys.executable, argv, os.environ, file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out, 1),
                    (os.POSIX_SPAWN_DUP2, out, 2),
                ], setsigdef=(signal.SIGPIPE, signal.SIGXFSZ)))
            finally:
                os.close(out)
        except BaseException:
            os.close(ready_r)
            if go_w is not None:
                os.close(go_w)
            raise
        finally:
            for fd in passed:
                os.close(fd)  # the hub holds the only write end: EOF tells us it is gone
        os.set_blocking(ready_r, False)
        return _Hub(proc, ready_r, go_w)

    def _start_standby(self) -> None:
        try:
            self.standby = self._spawn(recover=True, standby=True)
        except OSError as err:
            self.log(f"cannot start a standby hub: {err}")

    def _promote(self) -> _Hub | None:
        """The standby as the new hub, or None when there is none alive (then a cold start)."""
        standby, self.standby = self.standby, None
        if standby is None or standby.go_w is None:
            return None
        try:
            os.write(standby.go_w, b"g")
        except OSError:
            pass  # it died: its pipe is broken
        os.close(standby.go_w)
        standby.go_w = None
        if standby.proc.poll() is not None:
            self._close(standby)
            return None
        standby.started_at = time.monotonic()
        return standby

    def _end_standby(self) -> None:
        standby, self.standby = self.standby, None
        if standby is None:
            return
        if standby.go_w is not None:
            os.close(standby.go_w)  # EOF: it exits at once
            standby.go_w = None
        if standby.proc.wait_for(2.0) is None:
            standby.proc.kill()
            standby.proc.wait()
        self._close(standby)

    def _read_ready(self, hub: _Hub) -> None:
        if hub.ready_r is None:
            return
        try:
            data = os.read(hub.ready_r, 64)
        except BlockingIOError:
            return
        if data and hub.ready_at is None:
            hub.ready_at = time.monotonic()
            self._learn_port()
            self.log(f"hub pid {hub.proc.pid} serves at {self._address()}")
        if not data:
            os.close(hub.ready_r)
            hub.ready_r = None

    def _learn_port(self) -> None:
        """With --port 0 the first hub chose its port: restarts must come back on it."""
        if self.port:
            return
        with contextlib.suppress(OSError, ValueError):
            self.port = int(self._read_address().rsplit(":", 1)[1])

    def _read_address(self) -> str:
        with open(os.path.join(self.session, ADDRESS_FILE)) as file:
            return file.read().strip()

    def _address(self) -> str:
        try:
            return self._read_address()
        except OSError:
            return f"{self.bind_host}:{self.port}"

    def _watch(self, hub: _Hub) -> None:
        """Return once the hub has exited (reaped) or a stop signal came; keep a standby alive
        meanwhile (spawned standby_delay_s after the hub serves, again if it dies)."""
        while hub.proc.poll() is None and self.stop_signal is None:
            fds = [hub.ready_r] if hub.ready_r is not None else []
            timeout = None
            if self.use_standby and hub.ready_at is not None:
                if self.standby is not None and (code := self.standby.proc.poll()) is not None:
                    self.log(f"standby hub pid {self.standby.proc.pid} {describe_exit(code)}")
                    self._end_standby()
                if self.standby is None:
                    timeout = hub.ready_at + self.standby_delay_s - time.monotonic()
                    if timeout <= 0:
                        self._start_standby()
                        timeout = None
            if self._wait(fds, timeout):
                self._read_ready(hub)
        # A hub that wrote its byte and died at once: the byte is still in the pipe.
        self._read_ready(hub)

    def _close(self, hub: _Hub) -> None:
        if hub.ready_r is not None:
            os.close(hub.ready_r)
            hub.ready_r = None

    def _stop_hub(self, hub: _Hub) -> None:
        if hub.proc.poll() is None:
            self.log(f"stopping hub pid {hub.proc.pid} (SIGTERM)")
            with contextlib.suppress(ProcessLookupError):
                hub.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while hub.proc.poll() is None and time.monotonic() < deadline:
                self._wait([], deadline - time.monotonic())
            if hub.proc.poll() is None:
                self.log(f"hub pid {hub.proc.pid} did not stop within {STOP_TIMEOUT_S:g} s; killing it")
                hub.proc.kill()
        self.log(f"hub pid {hub.proc.pid} {describe_exit(hub.proc.wait())}")
        self._close(hub)

    def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less when a stop signal comes."""
        deadline = time.monotonic() + seconds
        while self.stop_signal is None and (left := deadline - time.monotonic()) > 0:
            self._wait([], left)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        self.log(f"supervisor pid {os.getpid()} starting the hub: {' '.join(self._hub_argv(False))}")
        restarts = 0
        quick_deaths = 0
        recover = False
        while True:
            if self.stop_signal is not None:
                return self._stopped(None)
            try:
                promoted = self._promote() if recover else None
                hub = promoted or self._spawn(recover)
                if promoted is not None:
                    self.log(f"standby hub pid {hub.proc.pid} takes over")
            except OSError as err:
                if not recover:
                    self.log(f"cannot start the hub: {err}")
                    return 1
                quick_deaths += 1
                delay = backoff_s(quick_deaths)
                self.log(f"cannot restart the hub: {err}; trying again in {delay:.1f} s")
                self._pause(delay)
                continue
            self._watch(hub)
            if self.stop_signal is not None:
                return self._stopped(hub)
            self._close(hub)
            code = hub.proc.wait()  # it has exited: _watch reaped it
            now = time.monotonic()
            uptime, served = now - hub.started_at, hub.served_s(now)
            if code == 0:
                self.log(f"hub pid {hub.proc.pid} exited with code 0 after {uptime:.1f} s: the cluster was stopped")
                self._end_standby()
                return 0
            if hub.ready_at is None and not recover:
                self.log(f"the hub {describe_exit(code)} before it served (pid {hub.proc.pid}, "
                         f"{uptime:.1f} s); giving up: see {os.path.join(self.logs, HUB_OUT)}")
                return code if code > 0 else 1
            quick_deaths = 0 if served >= HEALTHY_UPTIME_S else quick_deaths + 1
            delay = backoff_s(quick_deaths)
            restarts += 1
            why = " (it refused its store; see hub.out)" if code == STORE_REFUSED else ""
            self.log(f"hub pid {hub.proc.pid} {describe_exit(code)}{why} after {uptime:.1f} s up "
                     f"({served:.1f} s serving); restart {restarts} in {delay:.1f} s")
            self._pause(delay)
            recover = True

    def _stopped(self, hub: _Hub | None) -> int:
        assert self.stop_signal is not None
        self.log(f"received {signal.Signals(self.stop_signal).name}")
        self._end_standby()
        if hub is not None:
            self._stop_hub(hub)
        return 0

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.log.close()


def _detach() -> None:
    """Outlive whoever started us: a session of our own (the launcher makes one already)."""
    with contextlib.suppress(OSError):
        os.setsid()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _detach()
    supervisor = Supervisor(args)
    pid_file = os.path.join(supervisor.session, PID_FILE)
    supervisor.install_signals()
    with open(pid_file, "w") as file:
        file.write(f"{os.getpid()}\n")
    try:
        code = supervisor.run()
        supervisor.log(f"supervisor exits with code {code}")
        return code
    finally:
        with contextlib.suppress(OSError, ValueError), open(pid_file) as file:
            if int(file.read()) == os.getpid():
                os.unlink(pid_file)
        supervisor.close()


if __name__ == "__main__":
    sys.exit(main())
