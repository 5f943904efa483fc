"""The runtime's identity is fixed, and only the public entry points may start a cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from _drivers import run_driver

import actorhub
from actorhub.exceptions import NoRuntimeError, RuntimeShutDownError
from actorhub.runtime import runtime as _runtime
from actorhub.runtime.identity import Identity


@actorhub.remote
class Echo:
    def echo(self, x: int) -> int:
        return x

    def who(self) -> tuple[str, str, str]:
        ctx = actorhub.get_runtime_context()
        return ctx.get_job_id(), ctx.namespace, ctx.get_actor_id() or ""


@actorhub.remote
def double(x: int) -> int:
    return 2 * x


def _sessions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("session_")) if root.exists() else []


def test_identity_is_a_frozen_value_the_runtime_got_at_construction(cluster: actorhub.ClusterContext) -> None:
    runtime = _runtime.current()
    identity = runtime.identity
    assert (identity.job_id, identity.namespace, identity.node_id) == (
        cluster.job_id, cluster.namespace, cluster.node_id
    )
    assert identity.node_address and not identity.actor_id and not identity.worker_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.job_id = "other"  # type: ignore[misc]
    for field in ("identity", "job_id", "namespace", "node_id", "node_address", "actor_id", "incarnation"):
        with pytest.raises(AttributeError):
            setattr(runtime, field, getattr(runtime, field))
    assert runtime.identity is identity


def test_an_actor_runtime_is_built_with_its_actor(cluster: actorhub.ClusterContext) -> None:
    a = Echo.remote()
    job_id, namespace, actor_id = actorhub.get(a.who.remote())
    assert (job_id, namespace, actor_id) == (cluster.job_id, cluster.namespace, a.actor_id)


def test_the_runtime_layer_never_starts_a_cluster(session_root: Path) -> None:
    assert _runtime.current_or_none() is None
    with pytest.raises(NoRuntimeError, match="init"):
        _runtime.current()
    assert _sessions(session_root) == []


def test_handles_of_a_shut_down_cluster_refuse_and_start_nothing(session_root: Path) -> None:
    actorhub.init(num_cpus=1)
    try:
        a = Echo.remote()
        assert actorhub.get(a.echo.remote(1)) == 1
    finally:
        actorhub.shutdown()
    sessions = _sessions(session_root)
    with pytest.raises(RuntimeShutDownError, match="shut down"):
        a.echo.remote(2)
    assert not actorhub.is_initialized()
    assert _runtime.current_or_none() is None
    assert _sessions(session_root) == sessions  # no new cluster
    # A new cluster works, and the old handle still refuses: its actor was in the old cluster.
    actorhub.init(num_cpus=1)
    try:
        with pytest.raises(RuntimeShutDownError):
            a.echo.remote(2)
        assert actorhub.get(double.remote(5)) == 10
    finally:
        actorhub.shutdown()


def test_public_calls_start_a_local_cluster_without_init_and_again_after_shutdown_as_in_ray() -> None:
    out = run_driver(
        """
        import actorhub
        @actorhub.remote
        def f(x):
            return x + 1
        assert not actorhub.is_initialized()
        print(actorhub.get(f.remote(1)))
        assert actorhub.is_initialized()
        first = actorhub.get_runtime_context().get_job_id()
        actorhub.shutdown()
        print(actorhub.get(actorhub.put(5)))  # a new cluster, as ray.put after ray.shutdown
        print(actorhub.get(f.remote(2)))
        actorhub.shutdown()
        """
    )
    assert out.stdout.split() == ["2", "5", "3"], out.stderr


def test_identity_fields() -> None:
    identity = Identity(job_id="j", namespace="n", node_id="x")
    assert (identity.actor_id, identity.worker_id, identity.incarnation, identity.node_address) == ("", "", 0, "")
    assert dataclasses.replace(identity, actor_id="a") != identity
