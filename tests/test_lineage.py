"""Lineage reconstruction (tasks/lineage.py): task results lost with a SIGKILLed node are made
again at the next get(), recursively through lost arguments, within max_retries; what cannot be
made again says why; with the flag off a lost object stays ObjectLostError."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _procs import end
from _wait import wait_for

import actorhub
from actorhub.api import init_options
from actorhub.cluster.launcher import child_env, start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import (
    ObjectLostError,
    ObjectReconstructionFailedError,
    ObjectReconstructionFailedLineageEvictedError,
    ObjectReconstructionFailedMaxAttemptsExceededError,
    TaskUnschedulableError,
)
from actorhub.runtime.object_ref import ObjectRef
from actorhub.runtime.object_table import ErrorOrigin, ObjectTable
from actorhub.runtime.runtime import current
from actorhub.tasks.lineage import ENTRY_OVERHEAD_BYTES, Lineage
from actorhub.tasks.options import TaskOptions
from actorhub.tasks.submit_state import Task
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from actorhub.wire.records import NodeStatus

N = 32 * 1024  # int64s: 256 KiB, so every result goes to its node's store


def _note(runs: str, name: str) -> None:
    with open(runs, "a") as f:
        f.write(name + "\n")


@actorhub.remote
def make(runs: str, name: str, fill: int) -> Any:
    _note(runs, name)
    return np.full(N, fill, dtype=np.int64)


@actorhub.remote
def plus_one(runs: str, name: str, array: Any) -> Any:
    _note(runs, name)
    return array + 1


@actorhub.remote
def fails_on_rerun(flag: str) -> Any:
    if os.path.exists(flag):
        raise ValueError("this rerun fails")
    Path(flag).touch()
    return np.zeros(N, dtype=np.int64)


@actorhub.remote
class Maker:
    def make(self) -> Any:
        return np.ones(N, dtype=np.int64)


def _alive() -> dict[str, NodeStatus]:
    return {n.node_id: n for n in current().hub.cluster_status().nodes if n.alive}


def _add_node(context: actorhub.ClusterContext, started: list[subprocess.Popen[bytes]]) -> NodeStatus:
    before = set(_alive())
    started.append(start_node(Config.load(num_cpus=2), Session(Path(context.session_dir)), context.address))
    wait_for(lambda: bool(set(_alive()) - before), "the new node to join")
    return next(n for i, n in _alive().items() if i not in before)


def _kill_node(node: NodeStatus) -> None:
    os.kill(node.pid, signal.SIGKILL)
    wait_for(lambda: node.node_id not in _alive(), f"the hub to see node {node.node_id} dead")


def _stored_on(ref: ObjectRef[Any], node: NodeStatus) -> bool:
    return current().objects.store_id_of(ref.hex()).endswith("@" + node.address)


@pytest.fixture
def nodes(session_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen[bytes]]]:
    # Every get of an object on the SIGKILLed node first retries its refused connection for
    # unavailable_retry_s (2 s by default) before taking it as lost; the outcome is the same.
    monkeypatch.setenv("ACTORHUB_DEADLINES_UNAVAILABLE_RETRY_S", "0.5")
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        actorhub.shutdown()
        for process in started:
            end(process)


def test_a_chain_lost_with_its_node_is_made_again_and_what_cannot_be_says_why(
    nodes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # The head offers no CPUs: tasks run on the nodes added below, and their results live there.
    context = actorhub.init(num_cpus=0, enable_object_reconstruction=True)
    assert current().hub.cluster_status().object_reconstruction  # the hub tells every process
    node_b = _add_node(context, nodes)
    runs = str(tmp_path / "runs")
    a = make.remote(runs, "a", 1)
    b = plus_one.remote(runs, "b", a)
    c = plus_one.remote(runs, "c", b)
    once = make.options(max_retries=0).remote(runs, "once", 7)
    flaky = fails_on_rerun.remote(str(tmp_path / "flag"))
    maker = Maker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_b.node_id)).remote()
    from_actor = maker.make.remote()
    x = make.remote(runs, "x", 4)
    w = make.remote(runs, "w", 6)
    pinned = make.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_b.node_id)).remote(runs, "pin", 8)
    put = actorhub.put(np.full(N, 5, dtype=np.int64))  # in the head node's store
    made = [a, b, c, once, flaky, from_actor, x, w, pinned]
    ready, _ = actorhub.wait(made, num_returns=len(made), timeout=60, fetch_local=False)
    assert len(ready) == len(made)
    assert all(_stored_on(ref, node_b) for ref in made), "a result is not (only) in node B's store"
    node_c = _add_node(context, nodes)
    _kill_node(node_b)

    # c, then b and a as its lost arguments, run again (on node C), once each.
    assert int(actorhub.get(c, timeout=60)[-1]) == 3
    assert int(actorhub.get(b, timeout=60)[0]) == 2 and int(actorhub.get(a, timeout=60)[0]) == 1
    assert sorted(Path(runs).read_text().split()) == ["a", "a", "b", "b", "c", "c", "once", "pin", "w", "x"]
    assert all(_stored_on(ref, node_c) for ref in (a, b, c))
    # A new task whose argument was lost: its executor cannot read it, so the argument's task runs
    # again, then this one. And a future (what `await ref` uses) makes its object again too.
    assert int(actorhub.get(plus_one.remote(runs, "y", x), timeout=60)[0]) == 5
    assert int(w.future().result(timeout=60)[0]) == 6
    assert sorted(Path(runs).read_text().split())[-5:] == ["w", "w", "x", "x", "y"]

    with pytest.raises(ObjectReconstructionFailedMaxAttemptsExceededError, match="max_retries=0"):
        actorhub.get(once, timeout=60)
    with pytest.raises(ValueError, match="this rerun fails"):
        actorhub.get(flaky, timeout=60)
    with pytest.raises(ObjectReconstructionFailedError, match="an actor call's result"):
        actorhub.get(from_actor, timeout=60)
    with pytest.raises(TaskUnschedulableError, match=node_b.node_id):  # pinned hard to the dead node
        actorhub.get(pinned, timeout=60)
    assert Path(runs).read_text().split().count("once") == Path(runs).read_text().split().count("pin") == 1

    # A put lives in its owner's node's store: lost with that node, it cannot be made again.
    head = _alive()[context.node_id]
    _kill_node(head)
    with pytest.raises(ObjectReconstructionFailedError, match=r"made by put\(\)"):
        actorhub.get(put, timeout=60)


def test_without_the_flag_a_lost_result_is_object_lost(nodes: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    context = actorhub.init(num_cpus=0)
    assert not current().hub.cluster_status().object_reconstruction
    node_b = _add_node(context, nodes)
    runs = str(tmp_path / "runs")
    ref = make.remote(runs, "a", 1)
    actorhub.wait([ref], timeout=60, fetch_local=False)
    assert _stored_on(ref, node_b)
    _kill_node(node_b)
    with pytest.raises(ObjectLostError) as raised:
        actorhub.get(ref, timeout=60)
    assert type(raised.value) is ObjectLostError
    assert Path(runs).read_text().split() == ["a"]


def test_the_flag_comes_from_init_system_config_and_the_start_command(tmp_path: Path) -> None:
    def resolved(**hidden: Any) -> dict[str, Any]:
        params = {name: None for name in (
            "num_gpus", "resources", "labels", "include_dashboard", "dashboard_host", "dashboard_port", "job_config",
            "logging_format", "logging_config", "log_to_driver", "runtime_env", "storage", "cgroup_path",
            "system_reserved_cpu", "system_reserved_memory", "proxy_server_url")}
        out = init_options.resolve(**params, local_mode=False, configure_logging=False,
                                   enable_resource_isolation=False, hidden=hidden)
        assert not out.ignored, out.ignored
        return out.config

    assert resolved(enable_object_reconstruction=True)["enable_object_reconstruction"] is True
    assert resolved(_enable_object_reconstruction=True)["enable_object_reconstruction"] is True
    system = resolved(_system_config={"enable_object_reconstruction": True, "max_lineage_bytes": 4096})
    assert system["enable_object_reconstruction"] is True and system["lineage_max_bytes"] == 4096
    assert "enable_object_reconstruction" not in resolved()
    with pytest.raises(actorhub.exceptions.OptionsError, match="enable_object_reconstruction"):
        resolved(enable_object_reconstruction="yes")
    with pytest.raises(actorhub.exceptions.OptionsError, match="max_lineage_bytes"):
        resolved(_system_config={"max_lineage_bytes": -1})
    # A cluster started with it passes it to its hub, which tells every process.
    session = Session(tmp_path)
    assert child_env(Config.load(enable_object_reconstruction=True), session, "127.0.0.1")[
        "ACTORHUB_ENABLE_OBJECT_RECONSTRUCTION"] == "1"
    from actorhub.cli import _parser

    args = _parser().parse_args(["start", "--head", "--enable-object-reconstruction"])
    assert args.enable_object_reconstruction


# -- the bookkeeping, without processes ------------------------------------------------------------------
class _Host:
    """What Lineage needs of a runtime."""

    def __init__(self) -> None:
        self.objects = ObjectTable()
        self.address = "127.0.0.1:1"
        self.node_address = "127.0.0.1:2"
        self.rebuild_lost: Any = None


class _Submitter:
    def __init__(self) -> None:
        self.resubmitted: list[tuple[int, list[str]]] = []

    def alive_node_addresses(self) -> set[str]:
        return {"127.0.0.1:2"}  # node 127.0.0.1:9, where the results were, is gone

    def resubmit(self, task: Task, deps: list[ObjectRef[Any]]) -> None:
        self.resubmitted.append((task.seq, [d.hex() for d in deps]))


def _finished_task(host: _Host, lineage: Lineage, seq: int, args: list[ObjectRef[Any]], blob: bytes = b"x") -> Task:
    object_id = f"0000000011.t{seq:x}.0"
    task = Task(seq, f"task{seq}", ("f", b""), blob, TaskOptions(), [object_id])
    host.objects.create_pending([object_id], ErrorOrigin(task.name))
    lineage.submitted(task, args)
    host.objects.store_results([object_id], [f"r{seq}@127.0.0.1:9"])
    host.objects.complete_many([(object_id, b"", None)])
    lineage.finished(task)
    return task


def test_lineage_recovers_recursively_drops_with_refs_and_evicts_past_its_bytes() -> None:
    host, submitter = _Host(), _Submitter()
    lineage = Lineage(host, submitter, max_bytes=3 * (100 + ENTRY_OVERHEAD_BYTES))  # type: ignore[arg-type]
    try:
        a = _finished_task(host, lineage, 1, [], b"a" * 100)
        a_ref: ObjectRef[Any] = ObjectRef(a.object_ids[0], host.address, host.objects)
        b = _finished_task(host, lineage, 2, [a_ref], b"b" * 100)
        b_ref: ObjectRef[Any] = ObjectRef(b.object_ids[0], host.address, host.objects)
        assert lineage.keeps([a_ref.hex(), b_ref.hex()]) == [True, True]
        # b lost: a, its argument, was on the same dead node, so it runs first, and b after it.
        assert lineage.recover(b_ref.hex(), "r2@127.0.0.1:9")
        assert submitter.resubmitted == [(1, []), (2, [a_ref.hex()])]
        assert not host.objects.is_ready(a_ref.hex()) and not host.objects.is_ready(b_ref.hex())
        assert (a.retries_left, b.retries_left) == (2, 2)
        # Recovered already (pending): a second get's recover does not run it again.
        assert lineage.recover(b_ref.hex(), "r2@127.0.0.1:9") and len(submitter.resubmitted) == 2

        # The oldest lineage goes past max_bytes; its result, lost, says so.
        c = _finished_task(host, lineage, 3, [], b"c" * 100)
        d = _finished_task(host, lineage, 4, [], b"d" * 100)
        assert lineage.kept_tasks() == 3 and lineage.keeps([a_ref.hex()]) == [False]
        host.objects.complete_many([(a_ref.hex(), b"", None)])  # ... as if its rerun ended inline
        # Out of retries: says so.
        d.retries_left = 0
        assert lineage.recover(d.object_ids[0], "r4@127.0.0.1:9")
        with pytest.raises(ObjectReconstructionFailedMaxAttemptsExceededError):
            _raise(host, d.object_ids[0])
        # Lineage evicted: says so.
        e = _finished_task(host, lineage, 5, [], b"e" * 100)
        assert lineage.keeps([b_ref.hex()]) == [False]
        host.objects.store_results([b_ref.hex()], ["r9@127.0.0.1:9"])
        host.objects.complete_many([(b_ref.hex(), b"", None)])
        assert lineage.recover(b_ref.hex(), "r9@127.0.0.1:9")
        with pytest.raises(ObjectReconstructionFailedLineageEvictedError):
            _raise(host, b_ref.hex())

        # A result's last ref gone: its lineage goes too.
        c_ref: ObjectRef[Any] = ObjectRef(c.object_ids[0], host.address, host.objects)
        assert lineage.keeps([c.object_ids[0]]) == [True]
        del c_ref
        assert len(host.objects) >= 0  # drains the released refs
        assert lineage.keeps([c.object_ids[0]]) == [False] and lineage.keeps([e.object_ids[0]]) == [True]
    finally:
        lineage.close()


def _raise(host: _Host, object_id: str) -> None:
    from actorhub.wire.errors import to_exception

    error = host.objects.read(object_id)[1]
    assert error is not None
    raise to_exception(error)
