"""get_runtime_context(): who and where the calling code runs (Ray's RuntimeContext)."""

from __future__ import annotations

from typing import Any

from actorhub.runtime import runtime as _runtime
from actorhub.runtime import task_context


class RuntimeContext:
    def __init__(self, runtime: _runtime.Runtime) -> None:
        self._runtime = runtime

    @property
    def namespace(self) -> str:
        return task_context.namespace_of(self._runtime)

    @property
    def runtime_env(self) -> dict[str, Any]:
        """The runtime_env this code runs in (Ray's dict form; {} for none): the job's in a
        driver, the actor's or task's own merged over its creator's in a worker. Local paths
        appear as the URIs of their uploaded packages."""
        from actorhub.runtime_env.context import process_env

        env = process_env(self._runtime)
        return env.as_dict() if env is not None else {}

    def get_runtime_env_string(self) -> str:
        """`runtime_env` as JSON, as Ray's method of this name returns it."""
        import json

        return json.dumps(self.runtime_env)

    @property
    def gcs_address(self) -> str:
        """The hub's address (Ray's GCS): what `init(address=...)` joins."""
        return self._runtime.hub_address

    def get_job_id(self) -> str:
        return task_context.job_id_of(self._runtime)

    def get_node_id(self) -> str:
        return self._runtime.node_id

    def get_worker_id(self) -> str:
        return self._runtime.worker_id or self._runtime.caller_id

    def get_actor_id(self) -> str | None:
        """The id of the actor this code runs in; None in a driver and in tasks."""
        if task_context.running_task() is not None:
            return None  # a task's executor is an actor of actorhub's own, not the user's
        return self._runtime.actor_id or None

    def get_actor_name(self) -> str | None:
        """The name of the actor this code runs in: "" for an unnamed one, None outside actors."""
        actor_id = self.get_actor_id()
        if actor_id is None:
            return None
        return self._runtime.hub.actor_info(actor_id).name

    def get_task_id(self) -> str | None:
        """The id of the task or actor call this code runs in (its results' ids without their
        index, as `ObjectRef.task_id()` gives); None in a driver and in an actor's constructor."""
        task = task_context.running_task()
        if task is not None:
            return task.task_id
        if not self._runtime.actor_id:
            return None
        from actorhub.worker import current_call  # the worker's side: only in a worker

        return current_call.call_id()

    def get_task_name(self) -> str | None:
        """The name of the running task (its `name` option, else the function's qualified name),
        or "Class.method" in an actor method."""
        task = task_context.running_task()
        if task is not None:
            return task.name
        if not self._runtime.actor_id:
            return None
        from actorhub.worker import current_call

        return current_call.call_name()

    def get_task_function_name(self) -> str | None:
        return self.get_task_name()

    def get_assigned_resources(self) -> dict[str, float]:
        """What the running task holds ({"CPU": n} for a task with n > 0 CPUs), else what the
        actor holds ({"GPU": 1, ...}); {} in a driver."""
        task = task_context.running_task()
        if task is not None:
            held = {"CPU": task.num_cpus} if task.num_cpus > 0 else {}
            return {**held, **dict(task.resources)}
        return dict(self._runtime.identity.assigned)

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """Accelerators assigned to the running task, else to this worker, by kind, as strings
        (Ray's form)."""
        return {"GPU": [str(i) for i in _gpu_ids(self._runtime)], "TPU": [], "neuron_cores": []}

    def get_placement_group_id(self) -> str | None:
        from actorhub.runtime import placement_scope

        scope = placement_scope.current()
        return scope.group_id if scope is not None else None

    @property
    def current_placement_group_id(self) -> str | None:
        return self.get_placement_group_id()

    def should_capture_child_tasks_in_placement_group(self) -> bool:
        from actorhub.runtime import placement_scope

        scope = placement_scope.current()
        return scope is not None and scope.capture_child_tasks

    def get_node_labels(self) -> dict[str, str]:
        return {}

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """True in an actor whose process was restarted after a failure."""
        return self._runtime.incarnation > 0

    @property
    def current_actor(self) -> Any:
        from actorhub.api.actor_handle import ActorHandle, HandleState

        actor_id = self.get_actor_id()
        if not actor_id:
            raise RuntimeError("current_actor is only available inside an actor")
        info = self._runtime.hub.actor_info(actor_id)
        return ActorHandle(HandleState.from_info(info), self._runtime)

    def is_canceled(self) -> bool:
        """Whether cancel() was called on the actor call this code runs in (Ray's): a running
        call in a threaded or plain actor is left to finish, and may stop early on this.
        RuntimeError in a driver and in an async actor (a coroutine is cancelled instead)."""
        if not self._runtime.actor_id:
            raise RuntimeError("is_canceled() is only available inside an actor call or task")
        from actorhub.worker import current_call  # the worker's side: only in a worker

        return current_call.is_cancelled()

    def get(self) -> dict[str, Any]:
        """The context as a dict, as Ray's (job, node, namespace; the task or actor when in one)."""
        context: dict[str, Any] = {
            "job_id": self.get_job_id(),
            "node_id": self.get_node_id(),
            "namespace": self.namespace,
        }
        task_id = self.get_task_id()
        if task_id is not None:
            context["task_id"] = task_id
        actor_id = self.get_actor_id()
        if actor_id is not None:
            context["actor_id"] = actor_id
        return context


def get_gpu_ids() -> list[int]:
    """The GPUs of the node the running task or this actor holds (ids 0..n-1 of the node's
    GPUs); [] in a driver or a worker given none."""
    from actorhub.api.cluster import connected_runtime

    return _gpu_ids(connected_runtime())


def _gpu_ids(runtime: _runtime.Runtime) -> list[int]:
    task = task_context.running_task()
    return list(task.gpu_ids if task is not None else runtime.identity.gpu_ids)


def get_runtime_context() -> RuntimeContext:
    from actorhub.api.cluster import connected_runtime  # a public entry point: may start a cluster

    return RuntimeContext(connected_runtime())
