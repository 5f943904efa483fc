"""actorhub: an actor-first framework for Python services with Ray's core API.

`import actorhub as ray` runs a Ray actor program unchanged.
"""

from actorhub import exceptions, util
from actorhub._actor_class import ActorClass
from actorhub._actor_handle import ActorHandle, ActorMethod
from actorhub._api import (
    ClusterContext,
    get,
    get_actor,
    init,
    is_initialized,
    kill,
    put,
    shutdown,
    wait,
)
from actorhub._object_ref import ObjectRef
from actorhub._remote import method, remote
from actorhub._runtime_context import RuntimeContext, get_runtime_context

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
    "ClusterContext",
    "ObjectRef",
    "RuntimeContext",
    "__version__",
    "exceptions",
    "get",
    "get_actor",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "put",
    "remote",
    "shutdown",
    "util",
    "wait",
]
