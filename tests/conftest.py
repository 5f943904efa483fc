"""Fixtures that run real clusters (hub, node agent, workers) on loopback.

Every test is checked for leaks: a process with "actorhub" in its command line, a node
arena's directory in /dev/shm, or a simulated host's network namespace (tests/_hosts.py),
that appeared during the test and is not part of a still-running module cluster fails it.
Processes and arenas count only when they belong to this test run (its temp dir), so test runs
side by side on one machine neither fail nor clean up each other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _hosts import live_namespaces, remove_namespace
from _procs import parents

import actorhub
from actorhub.object_store import shm as _shm


def actorhub_processes() -> dict[int, int]:
    """pid -> parent pid of every live process whose command line mentions actorhub."""
    found: dict[int, int] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if b"actorhub" not in cmdline:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie is already dead; its parent reaps it
            continue
        found[int(entry)] = int(fields[1])
    return found


def _descends_from(pid: int, roots: set[int], parents: dict[int, int]) -> bool:
    seen = 0
    while pid in parents and seen < 64:
        if pid in roots:
            return True
        pid = parents[pid]
        seen += 1
    return pid in roots


_allowed_roots: set[int] = set()
# Set at session start: this run's temp dir. Cluster processes that outlive their parent are
# reparented away from pytest, but their command line names a session dir under it.
_basetemp: list[bytes] = []


def _all_parents() -> dict[int, int]:
    return parents()


def _ours(pid: int) -> bool:
    """A process this test run started, not one of a concurrent run on the same machine."""
    if _descends_from(pid, {os.getpid()}, _all_parents()):
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(base in cmdline for base in _basetemp)


def _leftovers(before: set[int]) -> dict[int, int]:
    now = actorhub_processes()
    return {
        pid: ppid
        for pid, ppid in now.items()
        if pid not in before and not _descends_from(pid, _allowed_roots, now) and _ours(pid)
    }


@pytest.fixture(scope="session", autouse=True)
def _remember_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    _basetemp.append(str(tmp_path_factory.getbasetemp()).encode())


def assert_no_leaks(before: set[int], what: str, wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    left = _leftovers(before)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _leftovers(before)
    if left:
        described = []
        for pid in left:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:160]
                described.append(f"{pid}: {cmdline!r}")
            except OSError:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if described:
            pytest.fail(f"{what} left processes behind:\n" + "\n".join(described))


def _arenas() -> set[Path]:
    """The node arenas' directories in shared memory (each node agent removes its own)."""
    return set(_shm.segment_root().glob("actorhub-*"))


def _session_suffixes() -> set[str]:
    """The arena-name parts (`object_store.shm.segments_name`) of this run's sessions: every
    session directory under this run's temp dir, at any depth a test puts one."""
    suffixes: set[str] = set()
    for base in _basetemp:
        root = Path(base.decode())
        for depth in range(1, 6):
            for session in root.glob("/".join(["*"] * depth) + "/session_*"):
                suffixes.add(session.name[-6:])
    return suffixes


def _our_arenas(paths: set[Path]) -> set[Path]:
    """Only arenas of this run's clusters: another test run on the machine has its own, alive."""
    if not paths:
        return paths
    suffixes = _session_suffixes()
    return {p for p in paths if p.name.removeprefix("actorhub-")[:6] in suffixes}


def assert_no_leaked_arenas(before: set[Path], what: str, wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    left = _our_arenas(_arenas() - before)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _our_arenas(_arenas() - before)
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    if left:
        pytest.fail(f"{what} left shared memory behind: " + ", ".join(sorted(str(p) for p in left)))


def assert_no_leaked_namespaces(before: set[str], what: str) -> None:
    """Simulated hosts (tests/_hosts.py) are network namespaces, with their veths and bridge
    inside them, so a namespace left behind is the whole of such a leak."""
    left = live_namespaces() - before
    for name in left:
        remove_namespace(name)
    if left:
        pytest.fail(f"{what} left network namespaces behind: " + ", ".join(sorted(left)))


@pytest.fixture(autouse=True)
def no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    before = set(actorhub_processes())
    arenas = _arenas()
    namespaces = live_namespaces()
    yield
    assert_no_leaks(before, request.node.nodeid)
    assert_no_leaked_arenas(arenas, request.node.nodeid)
    assert_no_leaked_namespaces(namespaces, request.node.nodeid)


@pytest.fixture(scope="session")
def allowed_process_roots() -> set[int]:
    """For a module-scoped cluster made outside `shared_cluster`: add its processes while it
    runs (and remove them after), so the workers they start are not taken for leaks."""
    return _allowed_roots


@pytest.fixture(autouse=True)
def session_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own session root, so address="auto" never finds another test's cluster."""
    root = Path(os.environ.get("ACTORHUB_SESSION_ROOT") or tmp_path_factory.mktemp("sessions"))
    monkeypatch.setenv("ACTORHUB_SESSION_ROOT", str(root))
    # Heads started by `actorhub start --head` serve the dashboard: on a free port, never 8265
    # and the ports after it, which a user's cluster or a test run beside this one may hold.
    monkeypatch.setenv("ACTORHUB_DASHBOARD_PORT", "0")
    return root


@pytest.fixture
def cluster(session_root: Path) -> Iterator[actorhub.ClusterContext]:
    """A fresh local cluster for one test."""
    context = actorhub.init(num_cpus=2)
    try:
        yield context
    finally:
        actorhub.shutdown()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[actorhub.ClusterContext]:
    """One cluster for a whole module, for tests that do not need a clean slate."""
    before = set(actorhub_processes())
    with module_cluster(tmp_path_factory.mktemp("shared-sessions"), num_cpus=2) as context:
        yield context
    assert_no_leaks(before, "the module cluster")


@contextlib.contextmanager
def module_cluster(root: Path, **init_options: Any) -> Iterator[actorhub.ClusterContext]:
    """A local cluster for a module's own fixture (e.g. one with a dashboard): its own session
    root, a dashboard on a free port, its processes allowed while it runs."""
    saved = {name: os.environ.get(name) for name in ("ACTORHUB_SESSION_ROOT", "ACTORHUB_DASHBOARD_PORT")}
    os.environ["ACTORHUB_SESSION_ROOT"] = str(root)
    os.environ["ACTORHUB_DASHBOARD_PORT"] = "0"  # never 8265: test runs go side by side
    before = set(actorhub_processes())
    context = actorhub.init(**init_options)
    roots = set(actorhub_processes()) - before
    _allowed_roots.update(roots)
    try:
        yield context
    finally:
        actorhub.shutdown()
        _allowed_roots.difference_update(roots)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def nodes_b_and_c(cluster: actorhub.ClusterContext) -> Iterator[tuple[str, str, str]]:
    """Two more node agents of 2 CPUs in a module's cluster, b then c: (its own node, b, c) once
    both joined; they end with the block."""
    from _procs import end
    from _wait import wait_for

    from actorhub.cluster.launcher import start_node
    from actorhub.cluster.session import Session
    from actorhub.config import Config
    from actorhub.runtime.runtime import current

    session = Session(Path(cluster.session_dir))
    agents = [start_node(Config.load(num_cpus=2), session, cluster.address, f"{name}0000000000000{i}")
              for i, name in ((1, "b"), (2, "c"))]
    _allowed_roots.update(p.pid for p in agents)
    try:
        wait_for(lambda: sum(n.alive for n in current().hub.cluster_status().nodes) == 3, "nodes b and c to join")
        yield cluster.node_id, "b00000000000001", "c00000000000002"
    finally:
        for p in agents:
            end(p)
        _allowed_roots.difference_update(p.pid for p in agents)
