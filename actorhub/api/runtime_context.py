"""get_runtime_context(): who and where the calling code runs."""

from __future__ import annotations

from typing import Any

from actorhub.runtime import runtime as _runtime


class RuntimeContext:
    def __init__(self, runtime: _runtime.Runtime) -> None:
        self._runtime = runtime

    @property
    def namespace(self) -> str:
        return self._runtime.namespace

    def get_job_id(self) -> str:
        return self._runtime.job_id

    def get_node_id(self) -> str:
        return self._runtime.node_id

    def get_worker_id(self) -> str:
        return self._runtime.worker_id or self._runtime.caller_id

    def get_actor_id(self) -> str | None:
        """The id of the actor this code runs in; None in a driver."""
        return self._runtime.actor_id or None

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """True in an actor whose process was restarted after a failure."""
        return self._runtime.incarnation > 0

    @property
    def current_actor(self) -> Any:
        from actorhub.api.actor_handle import ActorHandle, HandleState

        actor_id = self._runtime.actor_id
        if not actor_id:
            raise RuntimeError("current_actor is only available inside an actor")
        info = self._runtime.hub.actor_info(actor_id)
        return ActorHandle(HandleState.from_info(info), self._runtime)

    def get(self) -> dict[str, Any]:
        return {
            "job_id": self.get_job_id(),
            "node_id": self.get_node_id(),
            "namespace": self.namespace,
            "actor_id": self.get_actor_id(),
        }


def get_runtime_context() -> RuntimeContext:
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    return RuntimeContext(connected_runtime())
