"""actorhub: an actor-first framework for Python services with Ray's core API.

`import actorhub as ray` runs a Ray actor program unchanged.

The names below are re-exported lazily (PEP 562): cluster processes such as the node agent
live inside this package, and must not pay for importing grpc and the whole facade before
their first line runs (the node agent spawns its zygote first, so both boot in parallel).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actorhub import exceptions, util
    from actorhub._actor_class import ActorClass
    from actorhub._actor_handle import ActorHandle, ActorMethod
    from actorhub._api import (
        ClusterContext,
        cancel,
        get,
        get_actor,
        init,
        is_initialized,
        kill,
        put,
        shutdown,
        wait,
    )
    from actorhub._cluster_info import available_resources, cluster_resources, nodes
    from actorhub._object_ref import ObjectRef
    from actorhub._remote import method, remote
    from actorhub._runtime_context import RuntimeContext, get_runtime_context

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ActorClass": "actorhub._actor_class",
    "ActorHandle": "actorhub._actor_handle",
    "ActorMethod": "actorhub._actor_handle",
    "ClusterContext": "actorhub._api",
    "available_resources": "actorhub._cluster_info",
    "cluster_resources": "actorhub._cluster_info",
    "nodes": "actorhub._cluster_info",
    "cancel": "actorhub._api",
    "ObjectRef": "actorhub._object_ref",
    "RuntimeContext": "actorhub._runtime_context",
    "get": "actorhub._api",
    "get_actor": "actorhub._api",
    "get_runtime_context": "actorhub._runtime_context",
    "init": "actorhub._api",
    "is_initialized": "actorhub._api",
    "kill": "actorhub._api",
    "method": "actorhub._remote",
    "put": "actorhub._api",
    "remote": "actorhub._remote",
    "shutdown": "actorhub._api",
    "wait": "actorhub._api",
}
_SUBMODULES = {"exceptions", "util"}

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
    "ClusterContext",
    "ObjectRef",
    "RuntimeContext",
    "__version__",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
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
