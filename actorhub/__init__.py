"""actorhub: an actor-first framework for Python services with Ray's core API.

`import actorhub as ray` runs a Ray actor program unchanged.

The names below are re-exported lazily (PEP 562): cluster processes such as the node agent
live inside this package, and must not pay for importing grpc and the whole facade before
their first line runs (the node agent spawns its zygote first, so both boot in parallel).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from actorhub._grpc_engine import prefer_poller

# Before anything imports grpc (see _grpc_engine for why).
prefer_poller()

if TYPE_CHECKING:
    from actorhub import actor, exceptions, util
    from actorhub.actor import checkpoint
    from actorhub.api.actor_class import ActorClass
    from actorhub.api.actor_handle import ActorHandle, ActorMethod
    from actorhub.api.cancel import cancel
    from actorhub.api.cluster import (
        ClusterContext,
        get,
        init,
        is_initialized,
        kill,
        put,
        shutdown,
        wait,
    )
    from actorhub.api.cluster_info import available_resources, cluster_resources, nodes
    from actorhub.api.remote import method, remote
    from actorhub.api.runtime_context import RuntimeContext, get_gpu_ids, get_runtime_context
    from actorhub.runtime.id_types import ActorID, JobID, NodeID, TaskID
    from actorhub.runtime.object_ref import ObjectRef
    from actorhub.runtime.object_ref_generator import DynamicObjectRefGenerator, ObjectRefGenerator

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ActorClass": "actorhub.api.actor_class",
    "ActorHandle": "actorhub.api.actor_handle",
    "ActorMethod": "actorhub.api.actor_handle",
    "ClusterContext": "actorhub.api.cluster",
    "available_resources": "actorhub.api.cluster_info",
    "cluster_resources": "actorhub.api.cluster_info",
    "nodes": "actorhub.api.cluster_info",
    "cancel": "actorhub.api.cancel",
    "checkpoint": "actorhub.actor",
    "ObjectRef": "actorhub.runtime.object_ref",
    "ActorID": "actorhub.runtime.id_types",
    "JobID": "actorhub.runtime.id_types",
    "NodeID": "actorhub.runtime.id_types",
    "TaskID": "actorhub.runtime.id_types",
    "ObjectRefGenerator": "actorhub.runtime.object_ref_generator",
    "DynamicObjectRefGenerator": "actorhub.runtime.object_ref_generator",
    "RuntimeContext": "actorhub.api.runtime_context",
    "get": "actorhub.api.cluster",
    "get_actor": "actorhub.namespaces.lookup",
    "get_gpu_ids": "actorhub.api.runtime_context",
    "get_runtime_context": "actorhub.api.runtime_context",
    "init": "actorhub.api.cluster",
    "is_initialized": "actorhub.api.cluster",
    "kill": "actorhub.api.cluster",
    "method": "actorhub.api.remote",
    "put": "actorhub.api.cluster",
    "remote": "actorhub.api.remote",
    "shutdown": "actorhub.api.cluster",
    "wait": "actorhub.api.cluster",
}
_SUBMODULES = {"actor", "exceptions", "job_config", "util"}

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ActorID",
    "ActorMethod",
    "ClusterContext",
    "DynamicObjectRefGenerator",
    "JobID",
    "NodeID",
    "ObjectRef",
    "ObjectRefGenerator",
    "RuntimeContext",
    "TaskID",
    "__version__",
    "actor",
    "available_resources",
    "cancel",
    "checkpoint",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "util",
    "wait",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"actorhub.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'actorhub' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
