"""The behaviour behind the speed paths of issue 8 (never their timing, which is BENCHMARKS.md's).

- A same-node get maps nothing: it slices the process's one read-only mapping of the arena,
  zero-copy and read-only, and repeated gets leak neither mappings nor pins.
- A process that reads back its own puts gets each later put opened ahead, once: its gets make
  no OpenObject of their own.
- `init()` starts the cluster's processes before it imports the kernel; the launcher can spawn
  without waiting and wait afterwards, and a hub that fails to start leaves nothing behind.
- The zygote defers numpy until its first workers are forked, and can be forked rather than
  spawned by a node agent that imported its preload already.
- gRPC runs on its poller in every actorhub process (no EventEngine threads), unless the user
  chose otherwise in GRPC_EXPERIMENTS.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _procs import children

import actorhub
from actorhub.cluster import launcher
from actorhub.cluster.session import ADDRESS_FILE, LATEST, create_session
from actorhub.config import Config
from actorhub.node import zygote as _zygote
from actorhub.object_store import shm as _shm
from actorhub.runtime.runtime import current
from actorhub.wire.store import NodeStoreClient

MIB = 1024 * 1024


def _settle(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gc.collect()
        time.sleep(0.02)


def _arena_mappings() -> list[tuple[int, int, str]]:
    """(start, end, permissions) of this process's mappings of its node's arena."""
    arena = str(current().store_client()._arena.path)
    found = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == arena:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end, fields[1]))
    return found


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(id, asked on the main thread) of each open (pin) this process asks of its node's store."""
    asked: list[tuple[str, bool]] = []
    original = NodeStoreClient.open

    def counting(self: NodeStoreClient, object_id: str, reader: str) -> Any:
        asked.append((object_id, threading.current_thread() is threading.main_thread()))
        return original(self, object_id, reader)

    monkeypatch.setattr(NodeStoreClient, "open", counting)
    return asked


# -- starting a cluster (before the module's shared cluster starts) -----------------------------


def test_importing_the_entry_points_imports_no_grpc() -> None:
    # What lets init() spawn the cluster before the driver's own heavy imports.
    code = (
        "import sys, actorhub; actorhub.init; actorhub.get; actorhub.put; actorhub.shutdown; "
        "import actorhub.cluster.launcher; "
        "heavy = [m for m in ('grpc', 'actorhub.runtime.runtime', 'cloudpickle') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_init_starts_the_hub_supervisor_a_node_agent_its_zygote_and_workers(cluster: actorhub.ClusterContext) -> None:
    session = Path(cluster.session_dir)
    assert (session.parent / LATEST).resolve() == session.resolve()
    supervisor = int((session / "hub-supervisor.pid").read_text())
    hub = int((session / "hub.pid").read_text())
    (node_pid_file,) = session.glob("node-*.pid")
    node = int(node_pid_file.read_text())
    assert children(os.getpid()) >= {supervisor, node}
    assert hub in children(supervisor)
    (zygote,) = children(node)

    @actorhub.remote
    class Where:
        def pid(self) -> tuple[int, int]:
            return os.getpid(), os.getppid()

    where = Where.remote()  # held: an actor whose last handle goes ends
    pid, parent = actorhub.get(where.pid.remote())
    assert parent == zygote
    # The node keeps idle workers forked besides the one now hosting the actor.
    _settle(lambda: len(children(zygote)) >= 1 + Config.load().prestart_workers, what="prestarted workers")
    assert pid in children(zygote)


def test_start_head_can_spawn_first_and_wait_later(session_root: Path) -> None:
    config = Config.load()
    cluster = launcher.start_head(config, wait=False)
    try:
        assert [p.poll() for p in cluster.processes] == [None, None]
        launcher.wait_for_head(cluster, config)
        assert (cluster.session.path / ADDRESS_FILE).read_text().strip() == cluster.hub_address
        assert (session_root / LATEST).resolve() == cluster.session.path.resolve()
    finally:
        launcher.request_shutdown(cluster.hub_address, cluster.session.token, 5.0)
        launcher.stop_processes(cluster.processes, 10.0)
        launcher.remove_segments(cluster.session)


def test_a_hub_that_cannot_start_fails_init_and_leaves_nothing(
    session_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("ACTORHUB_HUB_PORT", str(taken.getsockname()[1]))
        with pytest.raises(launcher.ClusterStartError, match="the hub exited"):
            actorhub.init(num_cpus=1)
    assert not actorhub.is_initialized()
    (session,) = session_root.glob("session_*")
    assert not list(_shm.segment_root().glob(f"actorhub-{_shm.segments_name(session, '*')}"))


def test_the_hub_port_is_outside_the_ephemeral_range() -> None:
    # Else a port-0 bind or a connection of any process here could take it before the hub.
    low, high = launcher._ephemeral_range()
    for _ in range(20):
        assert not low <= launcher._free_port("127.0.0.1") <= high


def test_the_launcher_names_segment_directories_as_the_node_agent_does(tmp_path: Path) -> None:
    from actorhub.object_store.service import _segments_name

    session = create_session(tmp_path)
    assert _shm.segments_name(session.path, "abc123") == _segments_name(session.path, "abc123")


# -- the zygote -----------------------------------------------------------------------------------

PROBE = '''
import os, sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerBoot:
    worker_id: str
    node_id: str
    node_address: str
    hub_address: str
    session_dir: Path
    bind_host: str


def run_worker(boot):
    probe = boot.session_dir / f"probe-{boot.worker_id}"
    probe.write_text(f"{os.getppid()} {'numpy' in sys.modules}")
'''


@pytest.fixture
def probe_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A child entry that records its parent and whether numpy was there when it was forked."""
    (tmp_path / "probe_entry.py").write_text(PROBE)
    monkeypatch.setenv(_zygote.CHILD_ENTRY_ENV, "probe_entry:run_worker")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    session = create_session(tmp_path / "sessions")
    return session.path


def _drive(mode: str, session_dir: Path) -> list[str]:
    """In a fresh (single-threaded) interpreter: start a zygote by `mode`, fork w0, wait until
    the zygote has numpy, fork w1, close it; print the probes, the pid and exit code."""
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from actorhub.node import pipe_frames as _frames
        from actorhub.node import zygote as _zygote
        from actorhub._proto.v1 import node_pb2
        session = Path({str(session_dir)!r})
        z = getattr(_zygote, {mode!r})(session_dir=session, hub_address="127.0.0.1:1",
                                        bind_host="127.0.0.1", log_path=session / "logs" / "zygote.log")
        reader = _frames.FrameReader()

        def fork(worker_id):
            cmd = node_pb2.ZygoteCommand(fork=node_pb2.ForkWorker(worker_id=worker_id, node_id="n1"))
            _frames.write_all(z.cmd_fd, _frames.encode_frame(cmd.SerializeToString()))
            while not (session / f"probe-{{worker_id}}").exists() or not (session / f"probe-{{worker_id}}").read_text():
                time.sleep(0.01)

        def has_numpy():
            return "numpy" in Path(f"/proc/{{z.process.pid}}/maps").read_text()

        fork("w0")
        deadline = time.monotonic() + 30
        while not has_numpy():
            assert time.monotonic() < deadline, "the zygote never imported numpy"
            time.sleep(0.02)
        fork("w1")
        os.close(z.cmd_fd)
        code = z.process.wait(timeout=10)
        for w in ("w0", "w1"):
            print((session / f"probe-{{w}}").read_text())
        print(z.process.pid, code)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


@pytest.mark.parametrize("mode", ["spawn", "fork"])
def test_the_zygote_imports_numpy_after_its_first_fork(mode: str, probe_entry: Path) -> None:
    w0, w1, last = _drive(mode, probe_entry)[:3]
    zygote, code = map(int, last.split())
    assert w0 == f"{zygote} False"  # forked before numpy
    assert w1 == f"{zygote} True"  # and after
    assert code == 0


def test_a_forked_zygote_keeps_only_its_pipes_open(probe_entry: Path) -> None:
    # The forked zygote starts with the node agent's descriptors: it must close all but its
    # pipes (and stdio, which go to its log), or every worker would inherit them.
    script = textwrap.dedent(f"""
        import json, os, time
        from pathlib import Path
        from actorhub.node import zygote as _zygote
        session = Path({str(probe_entry)!r})
        stray = os.open(os.devnull, os.O_RDONLY)  # inheritable, as a careless import's would be
        z = _zygote.fork(session_dir=session, hub_address="127.0.0.1:1", bind_host="127.0.0.1",
                         log_path=session / "logs" / "zygote.log")
        time.sleep(0.2)
        fds = sorted(int(f) for f in os.listdir(f"/proc/{{z.process.pid}}/fd"))
        os.close(z.cmd_fd)
        print(json.dumps([fds, z.process.wait(timeout=10)]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fds, code = json.loads(out.stdout)
    # stdio (to its log), its two pipe ends, and the wake-up pipe it makes for signals.
    assert fds[:3] == [0, 1, 2]
    assert len(fds) == 7, fds
    assert code == 0
    log = (probe_entry / "logs" / "zygote.log").read_text()
    assert "Traceback" not in log


# -- same-node gets (on the module's shared cluster, from here on) -------------------------------


def test_a_large_get_slices_one_read_only_mapping_without_a_copy(shared_cluster: actorhub.ClusterContext) -> None:
    array = np.arange(2 * MIB, dtype=np.int64)  # 16 MiB
    ref = actorhub.put(array)
    first, again = actorhub.get(ref), actorhub.get(ref)
    other = actorhub.get(actorhub.put(array))
    for got in (first, again, other):
        assert np.array_equal(got, array)
        assert not got.flags.writeable
        with pytest.raises(ValueError):
            got[0] = 1
        with pytest.raises(ValueError):
            got.flags.writeable = True
    # One object, one copy in the store: two gets of it are views of the same bytes.
    assert first.ctypes.data == again.ctypes.data
    assert not np.shares_memory(first, array)
    # Every view lies in the process's one read-only mapping of the whole arena.
    read_only = [(start, end) for start, end, perms in _arena_mappings() if perms.startswith("r-")]
    assert len(read_only) == 1
    start, end = read_only[0]
    for got in (first, other):
        assert start <= got.ctypes.data and got.ctypes.data + got.nbytes <= end


def test_repeated_gets_leak_neither_mappings_nor_pins(shared_cluster: actorhub.ClusterContext) -> None:
    store = current().store_client()
    warm = actorhub.get(actorhub.put(np.zeros(MIB // 8)))
    del warm
    mappings = len(_arena_mappings())
    baseline = store.list().used
    kept = actorhub.put(np.ones(MIB // 8))
    for _ in range(40):
        fresh = actorhub.put(np.arange(MIB // 8))
        assert actorhub.get(fresh)[5] == 5
        assert actorhub.get(kept)[5] == 1
        del fresh
    assert len(_arena_mappings()) == mappings  # no mapping per get
    del kept
    gc.collect()

    def released() -> bool:
        store.flush()
        return not store._pins and store.list().used <= baseline

    _settle(released, what="the pins and regions of the gets to be released")


def test_a_process_reading_its_own_puts_gets_them_without_opening_them(
    shared_cluster: actorhub.ClusterContext, opens: list[tuple[str, bool]]
) -> None:
    store = current().store_client()
    first = actorhub.put(np.zeros(MIB // 8))
    assert actorhub.get(first)[0] == 0  # a read of an own put: later puts are opened ahead
    refs = []
    for i in range(10):
        refs.append(actorhub.put(np.full(MIB // 8, i)))
        assert actorhub.get(refs[-1])[0] == i
        assert actorhub.get(refs[-1])[-1] == i
    later = {r.hex() for r in refs}
    assert not [i for i, main in opens if i in later and main]  # no get opened one itself
    assert len(opens) == len({i for i, _ in opens})  # nothing opened twice
    # Puts dropped unread: the first stops the opening ahead, and every pin goes back.
    baseline = store.list().used
    for i in range(10):
        del refs[-1]
        actorhub.put(np.full(MIB // 8, i))  # dropped at once
    del first
    gc.collect()

    def released() -> bool:
        store.flush()
        return not store._pins and store.list().used < baseline

    _settle(released, what="pins of freed puts to be released")
    assert not store._open_ahead
    assert len(opens) <= 1 + len(later) + 1


def test_an_actor_reads_a_drivers_put_zero_copy(shared_cluster: actorhub.ClusterContext) -> None:
    @actorhub.remote
    class Reader:
        def look(self, refs: list[actorhub.ObjectRef[Any]]) -> tuple[bool, int, int]:
            got = actorhub.get(refs[0])
            again = actorhub.get(refs[0])
            return bool(got.flags.writeable), int(got[7]), int(again.ctypes.data - got.ctypes.data)

    ref = actorhub.put(np.arange(MIB // 8))
    writeable, seventh, apart = actorhub.get(Reader.remote().look.remote([ref]))
    assert (writeable, seventh, apart) == (False, 7, 0)


# -- gRPC's engine ------------------------------------------------------------------------------
_ENGINE_PROBE = textwrap.dedent("""
    import json, os, actorhub
    ctx = actorhub.init(num_cpus=1)

    @actorhub.remote
    class Probe:
        def engine(self):
            return os.environ.get("GRPC_EXPERIMENTS")

    print(json.dumps([os.environ.get("GRPC_EXPERIMENTS"), actorhub.get(Probe.remote().engine.remote(), timeout=60)]))
    actorhub.shutdown()
""")


@pytest.mark.parametrize("user_value", [None, "", "-event_engine_dns"])
def test_grpc_runs_on_its_poller_unless_the_user_chose(user_value: str | None) -> None:
    # The EventEngine adds a thread hop per message; a user's own GRPC_EXPERIMENTS still wins,
    # and what the driver runs with is what its cluster's processes (workers here) run with.
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if user_value is not None:
        env["GRPC_EXPERIMENTS"] = user_value
    out = subprocess.run([sys.executable, "-c", _ENGINE_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = "-event_engine_client,-event_engine_listener" if user_value is None else user_value
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [expected, expected]
