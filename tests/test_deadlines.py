"""A stopped peer (SIGSTOP) fails calls with a typed error within their deadline, not a hang."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _procs import stop

import actorhub
from actorhub.exceptions import ActorHubSystemError, RpcDeadlineExceededError
from actorhub.runtime.runtime import current

# Short deadlines for this test's cluster (every process reads them from the environment).
DEADLINE_S = 2.0
_SHORT = {"CONTROL_S": DEADLINE_S, "CREATE_ACTOR_S": DEADLINE_S, "KILL_S": DEADLINE_S,
          "STORE_S": DEADLINE_S, "FETCH_S": DEADLINE_S}
# What a call may take beyond its deadline on a loaded 2-core machine.
SLACK_S = 3.0


@actorhub.remote
class Echo:
    def echo(self, x: int) -> int:
        return x


@pytest.fixture
def short_cluster(session_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[actorhub.ClusterContext]:
    for name, value in _SHORT.items():
        monkeypatch.setenv(f"ACTORHUB_DEADLINES_{name}", str(value))
    context = actorhub.init(num_cpus=2)
    try:
        yield context
    finally:
        actorhub.shutdown()


def _raises_in_time(call: object) -> RpcDeadlineExceededError:
    start = time.monotonic()
    with pytest.raises(RpcDeadlineExceededError) as caught:
        call()  # type: ignore[operator]
    assert time.monotonic() - start < DEADLINE_S + SLACK_S
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, ActorHubSystemError)
    return caught.value


def test_a_stopped_hub_fails_lookups_creation_and_kill_within_their_deadlines(
    short_cluster: actorhub.ClusterContext,
) -> None:
    a = Echo.remote()
    assert actorhub.get(a.echo.remote(1), timeout=60) == 1
    hub_pid = int((Path(short_cluster.session_dir) / "hub.pid").read_text())
    stop(hub_pid)
    try:
        err = _raises_in_time(lambda: actorhub.get_actor("nobody"))
        assert err.operation == "GetNamedActor" and "hub at" in err.peer
        assert f"within {DEADLINE_S:.1f} s" in str(err)
        err = _raises_in_time(lambda: actorhub.get(Echo.remote().echo.remote(2), timeout=30))
        assert err.operation == "CreateActor"
        err = _raises_in_time(lambda: actorhub.kill(a))
        assert err.operation == "KillActor"
    finally:
        os.kill(hub_pid, signal.SIGCONT)


def test_a_stopped_node_fails_put_and_get_of_stored_objects_within_their_deadlines(
    short_cluster: actorhub.ClusterContext,
) -> None:
    stored = actorhub.put(np.ones(1 << 20, dtype=np.uint8))  # in the store, never read here
    node = next(n for n in current().hub.cluster_status().nodes if n.node_id == short_cluster.node_id)
    stop(node.pid)
    try:
        err = _raises_in_time(lambda: actorhub.put(np.zeros(1 << 20, dtype=np.uint8)))
        assert err.operation == "ReserveObject" and node.address in err.peer
        err = _raises_in_time(lambda: actorhub.get(stored, timeout=30))
        assert err.operation == "OpenObject"
    finally:
        os.kill(node.pid, signal.SIGCONT)
    assert int(actorhub.get(stored, timeout=60).sum()) == 1 << 20
