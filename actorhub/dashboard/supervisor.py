"""`python -m actorhub.dashboard`: keeps the dashboard's server (`dashboard/server.py`) running
beside the hub, and ends it with the cluster.

The launcher starts this process with the head (`cluster/launcher.py`); it starts the server
as its child (which gets SIGTERM if this process dies) and:
- restarts a server that dies after it served (a crash, a SIGKILL) on the port it had, after
  0.1 s doubling to 10 s while it keeps dying within 10 s; the jobs it ran go on meanwhile and
  the new server adopts them from the job store;
- exits with the server's code when its first server ends before it served (a port in use),
  which the launcher reports with the server's output;
- stops the server (SIGTERM: it stops the running jobs first) and exits when the hub's
  supervisor, whose pid it is given, has exited (the cluster was stopped), or on SIGTERM.

Standard library only, like the hub's supervisor: it is on the path of a head's start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from actorhub.cluster.lifetime import process_alive

PID_ROLE = "dashboard-supervisor"
SERVER_OUT = "dashboard.out"
ADDRESS_FILE = "dashboard_address"
HEALTHY_UPTIME_S = 10.0
MAX_BACKOFF_S = 10.0
STOP_TIMEOUT_S = 20.0  # the server gives each job a few seconds after SIGTERM
_POLL_S = 0.2


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m actorhub.dashboard")
    parser.add_argument("--session-dir", type=Path, required=True)
    parser.add_argument("--hub-address", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--port-retries", type=int, default=0)
    parser.add_argument("--node-id", default="", help="the head's node, where jobs run")
    parser.add_argument("--hub-supervisor-pid", type=int, required=True,
                        help="the hub's supervisor: when it has exited, the cluster is gone")
    return parser.parse_args(argv)


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.session: Path = args.session_dir
        self.stopping = False
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with contextlib.suppress(OSError), open(self.session / "logs" / SERVER_OUT, "a") as out:
            out.write(f"{stamp} dashboard supervisor: {message}\n")

    def _spawn(self, port: int, retries: int) -> tuple[subprocess.Popen[bytes], int]:
        ready_r, ready_w = os.pipe()
        argv = [sys.executable, "-m", "actorhub.dashboard.server", "--session-dir", str(self.session),
                "--hub-address", self.args.hub_address, "--host", self.args.host, "--port", str(port),
                "--port-retries", str(retries), "--ready-fd", str(ready_w), "--node-id", self.args.node_id]
        try:
            with open(self.session / "logs" / SERVER_OUT, "ab") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        pass_fds=(ready_w,), close_fds=True)
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        os.set_blocking(ready_r, False)
        return proc, ready_r

    def _wait(self, fds: list[int]) -> list[int]:
        readable, _, _ = select.select([self._wake_r, *fds], [], [], _POLL_S)
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        return [fd for fd in readable if fd != self._wake_r]

    def _cluster_gone(self) -> bool:
        return not process_alive(self.args.hub_supervisor_pid)

    def _served_port(self) -> int | None:
        try:
            return int((self.session / ADDRESS_FILE).read_text().strip().rsplit(":", 1)[1])
        except (OSError, ValueError, IndexError):
            return None

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.log(f"server pid {proc.pid} did not stop within {STOP_TIMEOUT_S:g} s; killing it")
                proc.kill()
                proc.wait()

    def run(self) -> int:
        port, retries = self.args.port, self.args.port_retries
        served_once = False
        quick_deaths = 0
        while True:
            proc, ready_r = self._spawn(port, retries)
            started = time.monotonic()
            served_at: float | None = None
            while proc.poll() is None and not self.stopping and not self._cluster_gone():
                if ready_r >= 0 and self._wait([ready_r]):
                    with contextlib.suppress(BlockingIOError):
                        if os.read(ready_r, 8) and served_at is None:
                            served_at = time.monotonic()
                    os.close(ready_r)
                    ready_r = -1
                elif ready_r < 0:
                    self._wait([])
            if ready_r >= 0:
                os.close(ready_r)
            if self.stopping or self._cluster_gone():
                self._stop(proc)
                return 0
            code = proc.returncode
            if code == 0:
                return 0
            if served_at is None and not served_once:
                self.log(f"the server exited with code {code} before it served")
                return code if code > 0 else 1
            served_once = True
            port = self._served_port() or port
            retries = 0
            quick_deaths = 0 if time.monotonic() - started >= HEALTHY_UPTIME_S else quick_deaths + 1
            delay = 0.0 if not quick_deaths else min(0.1 * 2 ** (quick_deaths - 1), MAX_BACKOFF_S)
            self.log(f"server pid {proc.pid} ended with code {code}; restarting it in {delay:.1f} s")
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopping:
                self._wait([])


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    with contextlib.suppress(OSError):
        os.setsid()
    pid_file = args.session_dir / f"{PID_ROLE}.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    supervisor = Supervisor(args)
    supervisor.install_signals()
    try:
        return supervisor.run()
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text()) == os.getpid():
                pid_file.unlink()
