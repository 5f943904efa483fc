"""Ray's smaller APIs: ObjectRef ids and futures, RuntimeContext, get_node_ip_address, wait([]) and fetch_local."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _procs import end

import actorhub
from actorhub import ObjectRef
from actorhub._proto.v1 import common_pb2, node_pb2, node_pb2_grpc
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import ObjectLostError
from actorhub.runtime.runtime import current
from actorhub.util import get_node_ip_address
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from actorhub.wire.records import NodeStatus


@actorhub.remote
def where() -> dict[str, Any]:
    rc = actorhub.get_runtime_context()
    return {
        "task_id": rc.get_task_id(), "task_name": rc.get_task_name(), "actor_id": rc.get_actor_id(),
        "actor_name": rc.get_actor_name(), "resources": rc.get_assigned_resources(), "ip": get_node_ip_address(),
        "gcs": rc.gcs_address, "pg": rc.get_placement_group_id(), "get": rc.get(),
    }


@actorhub.remote
class Named:
    def where(self) -> dict[str, Any]:
        rc = actorhub.get_runtime_context()
        return {"actor_id": rc.get_actor_id(), "actor_name": rc.get_actor_name(), "task_id": rc.get_task_id(),
                "resources": rc.get_assigned_resources(), "accelerators": rc.get_accelerator_ids()}

    def node(self) -> str:
        return actorhub.get_runtime_context().get_node_id()

    def big(self, n: int) -> Any:
        return np.arange(n, dtype=np.int64)


def _status_nodes() -> list[NodeStatus]:
    return [n for n in current().hub.cluster_status().nodes if n.alive]


@pytest.fixture(scope="module")
def two_nodes(shared_cluster: actorhub.ClusterContext, allowed_process_roots: set[int]) -> Iterator[NodeStatus]:
    """The shared cluster with a second node; yields the second node."""
    process = start_node(Config.load(num_cpus=1), Session(Path(shared_cluster.session_dir)), shared_cluster.address)
    allowed_process_roots.add(process.pid)
    try:
        deadline = time.monotonic() + 30
        while len(_status_nodes()) < 2:
            assert time.monotonic() < deadline, "the second node did not register"
            time.sleep(0.05)
        yield next(n for n in _status_nodes() if n.node_id != shared_cluster.node_id)
    finally:
        end(process)
        allowed_process_roots.discard(process.pid)


def test_object_ref_ids(two_nodes: NodeStatus) -> None:
    ref = actorhub.put(41)
    assert ref.binary() == ref.hex().encode()
    assert ObjectRef.from_hex(ref.hex()) == ref == ObjectRef.from_binary(ref.binary())
    assert ref.task_id().hex() == ref.hex()  # a put is its own
    refs = [where.remote(), where.remote()]
    assert all(r.task_id().hex() != r.hex() and r.hex().startswith(r.task_id().hex() + ".") for r in refs)
    assert refs[0].task_id() != refs[1].task_id()
    nil = ObjectRef.nil()
    assert nil.is_nil() and not ref.is_nil() and nil == ObjectRef.nil()
    with pytest.raises(TypeError):
        ObjectRef.from_hex(b"abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ObjectRef.from_binary("abc")  # type: ignore[arg-type]
    # A ref from an id alone reads in its owner (here), and fails cleanly anywhere else.
    assert actorhub.get(ObjectRef.from_hex(ref.hex())) == 41
    with pytest.raises(ObjectLostError, match="names no owner"):
        actorhub.get(ObjectRef.from_hex("0123.p1"), timeout=10)
    # The task's own view of its id is its results' task_id.
    assert actorhub.get(refs[0])["task_id"] == refs[0].task_id().hex()


def test_futures(two_nodes: NodeStatus) -> None:
    ref = actorhub.put("v")
    fut = ref.future()
    assert isinstance(fut, concurrent.futures.Future) and fut.result(30) == "v"

    async def main() -> list[Any]:
        as_future = ref.as_future()
        assert isinstance(as_future, asyncio.Future)
        return [await as_future, await where.remote()]

    value, info = asyncio.run(main())
    assert value == "v" and info["task_name"].endswith("where")


def test_runtime_context_in_tasks_actors_and_the_driver(two_nodes: NodeStatus) -> None:
    info = actorhub.get(where.options(name="custom-name").remote())
    assert info["task_name"] == "custom-name"
    assert info["actor_id"] is None and info["actor_name"] is None  # a task is not an actor
    assert info["resources"] == {"CPU": 1.0}
    assert info["ip"] == get_node_ip_address()
    assert info["gcs"] == actorhub.get_runtime_context().gcs_address != ""
    assert info["pg"] is None
    assert info["get"]["task_id"] == info["task_id"] and "actor_id" not in info["get"]
    assert actorhub.get(where.options(num_cpus=0).remote())["resources"] == {}

    named = Named.options(name="ctx-named").remote()
    call = named.where.remote()
    inside = actorhub.get(call)
    assert inside["actor_id"] == named.actor_id and inside["actor_name"] == "ctx-named"
    assert inside["task_id"] == call.task_id().hex() and inside["resources"] == {}  # the call's id, as in Ray
    assert inside["accelerators"]["GPU"] == []
    unnamed = Named.remote()
    assert actorhub.get(unnamed.where.remote())["actor_name"] == ""

    rc = actorhub.get_runtime_context()
    assert rc.get_task_id() is None and rc.get_actor_name() is None and rc.get_task_name() is None
    assert rc.should_capture_child_tasks_in_placement_group() is False


def test_get_node_ip_address_is_the_nodes_address(two_nodes: NodeStatus) -> None:
    ip = get_node_ip_address()
    assert ip == current().address.rsplit(":", 1)[0] == "127.0.0.1"


def test_wait_on_nothing(two_nodes: NodeStatus) -> None:
    assert actorhub.wait([]) == ([], [])
    assert actorhub.wait([], num_returns=0, timeout=0) == ([], [])


def _stored_on(address: str) -> set[str]:
    stub = node_pb2_grpc.NodeStub(current().channels.get(address))
    reply: node_pb2.ListObjectsReply = stub.ListObjects(common_pb2.Empty(), timeout=10)
    return {o.object_id for o in reply.objects}


def test_wait_fetch_local_copies_results_from_other_nodes(two_nodes: NodeStatus) -> None:
    here = next(n for n in _status_nodes() if n.node_id != two_nodes.node_id)
    far = Named.options(scheduling_strategy=NodeAffinitySchedulingStrategy(two_nodes.node_id, soft=False)).remote()
    assert actorhub.get(far.node.remote()) == two_nodes.node_id
    n = 512 * 1024  # 4 MiB: stored in the far node's store
    lazy, eager = far.big.remote(n), far.big.remote(n)
    ready, _ = actorhub.wait([lazy], fetch_local=False, timeout=60)
    assert ready == [lazy]
    lazy_id = current().objects.store_id_of(lazy.hex()).split("@")[0]
    assert lazy_id not in _stored_on(here.address), "fetch_local=False copied the object"
    ready, _ = actorhub.wait([eager], timeout=60)
    assert ready == [eager]
    eager_id = current().objects.store_id_of(eager.hex()).split("@")[0]
    assert eager_id in _stored_on(here.address), "fetch_local=True returned before the object was here"
    assert int(actorhub.get(eager)[-1]) == n - 1 and int(actorhub.get(lazy)[-1]) == n - 1
    actorhub.kill(far)
