"""The wire contract and the public API do not drift silently."""

from __future__ import annotations

import filecmp
import importlib.util
import inspect
import sys
from pathlib import Path

import actorhub
import actorhub.exceptions

REPO = Path(__file__).resolve().parent.parent


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    fresh = tmp_path / "v1"
    checked_in = REPO / "actorhub" / "_proto" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in checked_in.iterdir() if p.name != "__pycache__"), (
        "actorhub/_proto is stale: run `make protos`"
    )
    stale = [n for n in names if not filecmp.cmp(fresh / n, checked_in / n, shallow=False)]
    assert not stale, f"actorhub/_proto is stale against protos/ ({stale}): run `make protos`"


def test_public_api_is_pinned() -> None:
    assert sorted(actorhub.__all__) == sorted(
        [
            "ActorClass", "ActorHandle", "ActorMethod", "ClusterContext", "DynamicObjectRefGenerator", "ObjectRef",
            "ObjectRefGenerator", "RuntimeContext", "ActorID", "JobID", "NodeID", "TaskID",
            "__version__", "actor", "available_resources", "cancel", "checkpoint", "cluster_resources", "exceptions",
            "get",
            "get_actor", "get_gpu_ids", "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes",
            "put", "remote",
            "shutdown", "util", "wait",
        ]
    )
    for name in actorhub.__all__:
        assert hasattr(actorhub, name), name
    signatures = {
        "init": "(address: 'str | None' = None, *, num_cpus: 'float | None' = None, num_gpus: 'float | None' = None, "
        "resources: 'Mapping[str, float] | None' = None, labels: 'Mapping[str, str] | None' = None, "
        "object_store_memory: 'int | None' = None, local_mode: 'bool' = False, ignore_reinit_error: 'bool' = False, "
        "include_dashboard: 'bool | None' = None, dashboard_host: 'str | None' = None, "
        "dashboard_port: 'int | None' = None, job_config: 'JobConfig | None' = None, configure_logging: 'bool' = True, "
        "logging_level: 'str | int | None' = None, logging_format: 'str | None' = None, "
        "logging_config: 'object | None' = None, log_to_driver: 'bool | None' = None, namespace: 'str | None' = None, "
        "runtime_env: 'Mapping[str, Any] | None' = None, storage: 'str | None' = None, "
        "enable_resource_isolation: 'bool' = False, cgroup_path: 'str | None' = None, "
        "system_reserved_cpu: 'float | None' = None, system_reserved_memory: 'int | None' = None, "
        "proxy_server_url: 'str | None' = None, **kwargs: 'Any') -> 'ClusterContext'",
        "wait": "(refs: 'Sequence[ObjectRef[Any]]', *, num_returns: 'int' = 1, timeout: 'float | None' = None, "
        "fetch_local: 'bool' = True) -> 'tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]'",
        "kill": "(actor: 'ActorHandle[Any]', *, no_restart: 'bool' = True) -> 'None'",
        "get_actor": "(name: 'str', namespace: 'str | None' = None) -> 'ActorHandle[Any]'",
        "put": "(value: 'Any') -> 'ObjectRef[Any]'",
    }
    for name, expected in signatures.items():
        assert str(inspect.signature(getattr(actorhub, name))) == expected, name
    # One way in per public class: actorhub's own machinery creates actors with
    # api.actor_class.create_actor(runtime, ...) and calls through handles bound to its runtime.
    assert not hasattr(actorhub.ActorClass, "remote_in")
    assert not hasattr(actorhub.ActorMethod, "remote_in")


def test_exception_hierarchy_and_ray_aliases() -> None:
    ex = actorhub.exceptions
    for name in ex.__all__:
        cls = getattr(ex, name)
        assert issubclass(cls, ex.ActorHubError), name
    assert ex.RayError is ex.ActorHubError
    assert ex.RayTaskError is ex.TaskError
    assert issubclass(ex.ActorDiedError, ex.RayActorError)
    assert issubclass(ex.ActorUnavailableError, ex.RayActorError)
    assert issubclass(ex.GetTimeoutError, TimeoutError)
    assert issubclass(ex.OwnerDiedError, ex.ObjectLostError)


def test_importing_actorhub_starts_nothing() -> None:
    import subprocess

    code = (
        "import threading, actorhub, sys; "
        "assert threading.active_count() == 1, threading.enumerate(); "
        "assert 'actorhub.namespaces' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
