"""Two node agents on one machine: objects pulled between their stores, tasks run on both."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _drivers import REPO, driver_script
from _procs import end
from _wait import wait_for

import actorhub
from actorhub._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import ObjectLostError, TaskUnschedulableError
from actorhub.object_store.transfer import CHUNK_BYTES
from actorhub.runtime.runtime import current
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from actorhub.wire.records import ClusterStatus, NodeStatus

MIB = 1 << 20


@actorhub.remote
class Reader:
    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()

    def summary(self, array: Any) -> tuple[int, bool, int]:
        # A top-level ref argument: resolved (pulled to this node) before the method runs.
        return int(array.sum()), bool(array.flags.writeable), int(array.nbytes)

    def get_nested(self, refs: list[Any]) -> int:
        return int(actorhub.get(refs[0])[-1])

    def hold(self, refs: list[Any]) -> None:
        self.held = refs[0]

    def read_held(self) -> int:
        return int(actorhub.get(self.held)[-1])


def _status() -> ClusterStatus:
    return current().hub.cluster_status()


def _listing(address: str) -> node_pb2.ListObjectsReply:
    stub = node_pb2_grpc.NodeStub(current().channels.get(address))
    reply: node_pb2.ListObjectsReply = stub.ListObjects(common_pb2.Empty(), timeout=10)
    return reply


@pytest.fixture
def second_node(cluster: actorhub.ClusterContext) -> Iterator[NodeStatus]:
    process = start_node(Config.load(num_cpus=2), Session(Path(cluster.session_dir)), cluster.address)
    try:
        wait_for(lambda: len([n for n in _status().nodes if n.alive]) == 2, "the second node to join", 15)
        yield next(n for n in _status().nodes if n.node_id != cluster.node_id)
    finally:
        end(process)


def _reader_on(node: NodeStatus) -> Any:
    reader = Reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote()
    assert actorhub.get(reader.node.remote()) == node.node_id
    return reader


def test_a_large_object_is_pulled_in_chunks_and_mapped_read_only_on_the_other_node(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    array = np.arange(3 * CHUNK_BYTES // 8 + 12345, dtype=np.int64)  # three chunks and a bit
    ref = actorhub.put(array)
    reader = _reader_on(second_node)
    total, writeable, nbytes = actorhub.get(reader.summary.remote(ref))
    assert (total, nbytes) == (int(array.sum()), array.nbytes)
    assert not writeable, "the reader got a private copy, not a mapping of its node's store"
    store_id = current().objects.store_id_of(ref.hex())
    copies = {o.object_id: o for o in _listing(second_node.address).objects}
    assert store_id in copies and copies[store_id].where == "shared memory"
    assert copies[store_id].size >= array.nbytes
    # A second read on that node maps the copy there: no second copy, same bytes.
    assert actorhub.get(reader.get_nested.remote([ref])) == int(array[-1])
    assert [o.object_id for o in _listing(second_node.address).objects].count(store_id) == 1
    # Freed by its owner: the copy goes too.
    del ref
    wait_for(lambda: store_id not in {o.object_id for o in _listing(second_node.address).objects},
             "the copy to leave the second node's store", 15)
    actorhub.kill(reader)


def test_concurrent_readers_on_one_node_share_one_pull(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    array = np.full(4 * MIB, 7, dtype=np.int64)  # 32 MiB
    ref = actorhub.put(array)
    readers = [_reader_on(second_node) for _ in range(3)]
    results = actorhub.get([r.summary.remote(ref) for r in readers])
    assert results == [(7 * 4 * MIB, False, 32 * MIB)] * 3
    store_id = current().objects.store_id_of(ref.hex())
    assert [o.object_id for o in _listing(second_node.address).objects].count(store_id) == 1
    for r in readers:
        actorhub.kill(r)


def test_large_task_arguments_cross_nodes_through_the_stores(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    @actorhub.remote
    def checksum(array: Any) -> tuple[int, str]:
        return int(array.sum()), actorhub.get_runtime_context().get_node_id()

    array = np.ones(2 * MIB, dtype=np.int64)
    pinned = checksum.options(scheduling_strategy=NodeAffinitySchedulingStrategy(second_node.node_id, soft=False))
    assert actorhub.get(pinned.remote(array)) == (2 * MIB, second_node.node_id)


def test_a_pull_from_a_node_that_lost_the_object_fails_with_object_lost(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    client = current().store_client()
    with pytest.raises(ObjectLostError, match="could not be brought"):
        client.pull("no-such-object", second_node.address, current().address)


@actorhub.remote
def _node_after(seconds: float) -> str:
    time.sleep(seconds)
    return actorhub.get_runtime_context().get_node_id()


def test_tasks_fill_the_callers_node_first_then_run_on_the_others(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    # Two CPUs per node: two at a time stay on the caller's node, the next two go to the other
    # (unless its first lease comes later than one here frees up, on a slow machine).
    nodes = actorhub.get([_node_after.remote(1.0) for _ in range(4)])
    assert set(nodes) == {cluster.node_id, second_node.node_id} and nodes.count(cluster.node_id) >= 2, nodes
    # One at a time: the caller's node has room, so they stay there.
    assert {actorhub.get(_node_after.remote(0)) for _ in range(5)} == {cluster.node_id}


def test_node_affinity_pins_tasks_and_an_unknown_node_is_a_typed_error(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    pinned = _node_after.options(scheduling_strategy=NodeAffinitySchedulingStrategy(second_node.node_id))
    assert set(actorhub.get([pinned.remote(0) for _ in range(6)])) == {second_node.node_id}
    nowhere = _node_after.options(scheduling_strategy=NodeAffinitySchedulingStrategy("0123456789abcdef"))
    with pytest.raises(TaskUnschedulableError, match="0123456789abcdef"):
        actorhub.get(nowhere.remote(0), timeout=30)


def test_tasks_on_a_node_killed_with_sigkill_are_retried_on_the_others(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    refs = [_node_after.remote(3) for _ in range(4)]  # two here, two on the other node
    time.sleep(1.5)
    os.kill(second_node.pid, signal.SIGKILL)
    # The two that ran there come back from here, as retries (max_retries defaults to 3).
    assert actorhub.get(refs, timeout=60) == [cluster.node_id] * 4
    # And new tasks no longer go there.
    assert set(actorhub.get([_node_after.remote(0.2) for _ in range(4)])) == {cluster.node_id}


@actorhub.remote
class Shard:
    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()

    def pull(self, fill: int) -> Any:
        return np.full(3 * MIB, fill, dtype=np.int64)  # 24 MiB: three chunks


def test_large_results_from_another_node_come_through_its_store(
    cluster: actorhub.ClusterContext, second_node: NodeStatus
) -> None:
    shard = Shard.options(scheduling_strategy=NodeAffinitySchedulingStrategy(second_node.node_id)).remote()
    assert actorhub.get(shard.node.remote()) == second_node.node_id

    @actorhub.remote
    def produce(fill: int) -> Any:
        return np.full(3 * MIB, fill, dtype=np.int64)

    pinned = produce.options(scheduling_strategy=NodeAffinitySchedulingStrategy(second_node.node_id))
    rt = current()
    refs = [shard.pull.remote(5), pinned.remote(6)]
    for ref, fill in zip(refs, (5, 6), strict=True):
        array = actorhub.get(ref)
        assert int(array[0]) == int(array[-1]) == fill and array.nbytes == 24 * MIB
        assert not array.flags.writeable  # mapped from this node's copy
        assert "@" in rt.objects.store_id_of(ref.hex()), "the result travelled inline"
    # Both stores hold each result once: the primary there, the copy here.
    ids = {rt.objects.store_id_of(r.hex()).partition("@")[0] for r in refs}
    assert ids <= {o.object_id for o in _listing(second_node.address).objects}
    assert ids <= {o.object_id for o in rt.store_client().list().objects}
    # `actorhub memory` shows both places the bytes are.
    out = subprocess.run(
        [sys.executable, "-m", "actorhub.cli", "memory"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(refs[0].hex()))
    assert f"shared memory (node {cluster.node_id[:8]})" in row and f"(node {second_node.node_id[:8]})" in row, row
    # A borrower on the result's node maps the primary, with no copy made.
    reader = _reader_on(second_node)
    assert actorhub.get(reader.summary.remote(refs[0])) == (5 * 3 * MIB, False, 24 * MIB)
    del array, ref, refs
    wait_for(lambda: not ids & {o.object_id for o in _listing(second_node.address).objects},
             "the results to leave the second node's store", 15)
    wait_for(lambda: not ids & {o.object_id for o in rt.store_client().list().objects},
             "the copies to leave this node's store", 15)
    actorhub.kill(shard)
    actorhub.kill(reader)


def test_the_parameter_server_runs_across_two_nodes(session_root: Path) -> None:
    """examples/parameter_server.py, unchanged, on a cluster of two nodes it joins by "auto"."""
    cli = [sys.executable, "-m", "actorhub.cli"]

    def run(*args: str, timeout: float = 120.0, **env: str) -> str:
        out = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env={**os.environ, **env}, cwd=REPO,
        )
        assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    head = run(*cli, "start", "--head", "--num-cpus", "2")
    try:
        match = re.search(r"hub address:\s+(\S+)", head)
        assert match, head
        run(*cli, "start", "--address", match.group(1), "--num-cpus", "6")
        out = run(sys.executable, str(REPO / "examples" / "parameter_server.py"), ACTORHUB_ADDRESS="auto")
        assert "8 workers x 20 rounds: every shard applied" in out, out
        # Its worker tasks ran on both nodes (their executors stay, detached, until the end).
        placed = run(*driver_script(
            """
            import actorhub
            from actorhub.runtime.runtime import current
            actorhub.init(address="auto")
            actors = current().hub.list_actors("", all_namespaces=True)
            print(sorted({a.node_id for a in actors if a.class_name == "TaskExecutor"}))
            """
        ))
        assert placed.strip().splitlines()[-1].count("'") == 4, placed  # two node ids
    finally:
        subprocess.run([*cli, "stop"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


def test_copies_are_dropped_not_spilled_under_pressure_and_pulled_again(cluster: actorhub.ClusterContext) -> None:
    process = start_node(
        Config.load(num_cpus=1, object_store_memory=64 * MIB), Session(Path(cluster.session_dir)), cluster.address
    )
    try:
        wait_for(lambda: len([n for n in _status().nodes if n.alive]) == 2, "the second node to join", 15)
        small_node = next(n for n in _status().nodes if n.node_id != cluster.node_id)
        reader = _reader_on(small_node)
        first = actorhub.put(np.full(5 * MIB, 1, dtype=np.int64))  # 40 MiB each: one fits there
        second = actorhub.put(np.full(5 * MIB, 2, dtype=np.int64))
        ids = [current().objects.store_id_of(r.hex()) for r in (first, second)]
        actorhub.get(reader.hold.remote([first]))  # the reader keeps its ref throughout
        assert actorhub.get(reader.read_held.remote()) == 1
        time.sleep(1.0)  # the reader's pin on the copy goes back
        assert actorhub.get(reader.summary.remote(second))[0] == 2 * 5 * MIB
        listing = _listing(small_node.address)
        assert [o.object_id for o in listing.objects] == [ids[1]] and listing.spilled == 0
        time.sleep(1.0)
        assert actorhub.get(reader.read_held.remote()) == 1  # its copy was dropped: pulled again
        assert ids[0] in {o.object_id for o in _listing(small_node.address).objects}
        actorhub.kill(reader)
    finally:
        process.terminate()
        process.wait(10)
