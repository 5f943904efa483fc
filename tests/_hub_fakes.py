"""A stand-in hub for the supervisor's tests, and helpers to run a supervisor over it.

`python -m _hub_fakes` (with this directory on PYTHONPATH) honours the hub's flags: it arms
PR_SET_PDEATHSIG and checks its parent as `--supervisor-pid` asks, waits as `--standby-fd`
asks, listens on `--port`, writes hub.pid and hub_address, writes its byte to `--ready-fd`,
and exits 0 on SIGTERM. What each
start does comes from FAKE_HUB_MODES, a comma-separated list read by start number (the last
one repeats):

  serve    serve until SIGTERM (exit 0)
  crash    serve, then exit 7 at once
  fail     exit 5 without serving
  refuse   exit 3 (a refused store) without serving

Each start also records its pid and argv, one a line, in fake-hub-<n>.info in the session
directory (the leak check of conftest.py sees only command lines that name actorhub).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType

TESTS = Path(__file__).resolve().parent
_PR_SET_PDEATHSIG = 1


def _start_number(session: Path) -> int:
    counter = session / "fake-hub-starts"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    return n


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind-host", default="127.0.0.1")
    parser.add_argument("--store", type=Path)
    parser.add_argument("--recover", action="store_true")
    parser.add_argument("--supervisor-pid", type=int)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--standby-fd", type=int)
    args = parser.parse_args()
    if args.supervisor_pid is not None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != args.supervisor_pid:
            return 1
    if args.standby_fd is not None:
        # A standby: it counts as a start only once promoted (one byte; EOF ends it).
        promoted = os.read(args.standby_fd, 1) != b""
        os.close(args.standby_fd)
        if not promoted:
            return 0
    session: Path = args.session_dir
    n = _start_number(session)
    info = session / f"fake-hub-{n}.info"
    info.with_suffix(".tmp").write_text("\n".join([str(os.getpid()), *sys.argv[1:]]))
    info.with_suffix(".tmp").replace(info)
    modes = os.environ.get("FAKE_HUB_MODES", "serve").split(",")
    mode = modes[min(n, len(modes)) - 1]
    print(f"fake hub {os.getpid()} start {n}: {mode}", flush=True)
    if mode == "fail":
        print("fake hub: failing to start", file=sys.stderr, flush=True)
        return 5
    if mode == "refuse":
        print(f"fake hub: refusing the store {args.store}", file=sys.stderr, flush=True)
        return 3

    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.bind_host, args.port))
    listener.listen()
    listener.settimeout(0.05)
    (session / "hub.pid").write_text(f"{os.getpid()}\n")
    address = f"{args.bind_host}:{listener.getsockname()[1]}"
    tmp = session / "hub_address.tmp"
    tmp.write_text(address + "\n")
    tmp.replace(session / "hub_address")
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"r")
        os.close(args.ready_fd)
    if mode == "crash":
        os._exit(7)
    while not stopping:
        try:
            conn, _ = listener.accept()
        except (TimeoutError, InterruptedError):
            continue
        conn.sendall(f"{os.getpid()}\n".encode())
        conn.close()
    return 0


# -- helpers for the tests -------------------------------------------------------------------------


def supervisor_env(modes: str) -> dict[str, str]:
    env = dict(os.environ, FAKE_HUB_MODES=modes)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    return env


def start_supervisor(session: Path, port: int, modes: str, *extra: str) -> subprocess.Popen[bytes]:
    """A supervisor of fake hubs, in its own session as the launcher starts it."""
    with open(session / "logs" / "hub-supervisor.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "actorhub.hub.supervisor", "--session-dir", str(session), "--port", str(port),
             "--bind-host", "127.0.0.1", "--hub-module", "_hub_fakes", *extra],
            env=supervisor_env(modes), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def fake_starts(session: Path) -> list[tuple[int, list[str]]]:
    """(pid, argv) of each fake hub started in `session`, in order."""
    found = []
    for n in range(1, 1000):
        try:
            pid, *argv = (session / f"fake-hub-{n}.info").read_text().splitlines()
        except FileNotFoundError:
            break
        found.append((int(pid), argv))
    return found


def hub_pid_of_connection(port: int) -> int | None:
    """The pid a fake hub on `port` answers a connection with; None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            return int(conn.makefile().readline())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


if __name__ == "__main__":
    sys.exit(main())
