"""The named actors the gateway calls: handles looked up once per (namespace, name) and kept.

A lookup asks the hub (as `get_actor` does), on a thread: the event loop serves other requests
meanwhile, and concurrent requests for the same actor share one lookup. An entry is dropped
when a call finds its actor dead or unreachable (`forget`), so the next request looks the name
up again: a name taken over by a new actor is followed, and one that is gone answers 404.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from actorhub.api.actor_handle import ActorHandle, HandleState
from actorhub.gateway.interface import ExposedMethod, exposed_methods
from actorhub.namespaces.rules import SYSTEM_NAMESPACE, validate_name, validate_namespace
from actorhub.runtime.runtime import Runtime
from actorhub.wire.records import ActorInfo


class ActorNotFoundError(LookupError):
    """No live actor by that name in that namespace."""


class MethodNotFoundError(ActorNotFoundError):
    """The actor exposes no such method (it has none, it is private, or the actor is not typed)."""


@dataclass(frozen=True)
class ExposedActor:
    namespace: str
    name: str
    class_name: str
    handle: ActorHandle[Any]
    methods: dict[str, ExposedMethod]

    def method(self, name: str) -> ExposedMethod:
        method = self.methods.get(name)
        if method is None:
            offered = ", ".join(sorted(self.methods)) or "none: it is not a typed actor (@remote(typed=True))"
            raise MethodNotFoundError(f"actor {self.name!r} in namespace {self.namespace!r} exposes no method "
                                     f"{name!r} (exposed: {offered})")
        return method


class ActorDirectory:
    """(namespace, name) -> ExposedActor, for the gateway's event loop."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._actors: dict[tuple[str, str], ExposedActor] = {}
        self._lookups: dict[tuple[str, str], asyncio.Future[ExposedActor]] = {}

    async def find(self, namespace: str, name: str) -> ExposedActor:
        key = (namespace, name)
        actor = self._actors.get(key)
        if actor is not None:
            return actor
        pending = self._lookups.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, self._lookup, key))
            self._lookups[key] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(key, None))
        actor = await asyncio.shield(pending)
        self._actors[key] = actor
        return actor

    def forget(self, actor: ExposedActor) -> None:
        """Drop `actor`'s entry (unless a later lookup replaced it already)."""
        key = (actor.namespace, actor.name)
        if self._actors.get(key) is actor:
            del self._actors[key]

    def _lookup(self, key: tuple[str, str]) -> ExposedActor:
        namespace, name = key
        try:
            validate_name(name)
            validate_namespace(namespace)  # the system namespace (actorhub's own actors) is refused
        except (TypeError, ValueError) as e:
            raise ActorNotFoundError(str(e)) from None
        try:
            info = self._runtime.hub.get_named_actor(name, namespace)
        except ValueError:  # the hub knows no live actor by that name
            raise ActorNotFoundError(f"no live actor named {name!r} in namespace {namespace!r}") from None
        handle: ActorHandle[Any] = ActorHandle(HandleState.from_info(info), self._runtime)
        return ExposedActor(namespace, name, info.class_name, handle, exposed_methods(info.class_name, info.methods))

    async def listing(self, namespace: str | None) -> list[tuple[ActorInfo, dict[str, ExposedMethod]]]:
        """The named live actors of `namespace` (None: of every namespace but the system one)
        with their exposed methods, typed actors only."""
        infos = await asyncio.get_running_loop().run_in_executor(None, self._list, namespace)
        found = []
        for info in infos:
            methods = exposed_methods(info.class_name, info.methods)
            if methods:
                found.append((info, methods))
        return found

    def _list(self, namespace: str | None) -> list[ActorInfo]:
        infos = self._runtime.hub.list_actors(namespace or "", all_namespaces=namespace is None, named_only=True)
        return sorted((i for i in infos if i.namespace != SYSTEM_NAMESPACE and i.name), key=lambda i: (i.namespace,
                                                                                                         i.name))
