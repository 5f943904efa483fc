"""The one exception hierarchy of actorhub, rooted at :class:`ActorHubError`.

Ray's names are kept as aliases (``RayError``, ``RayActorError``, ``RayTaskError``) so that
``except ray.exceptions.RayActorError`` keeps working after ``import actorhub as ray``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

__all__ = [
    "ActorDiedError",
    "ActorError",
    "ActorHubError",
    "ActorHubSystemError",
    "ActorPlacementGroupRemoved",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "ArgumentValidationError",
    "AsyncioActorExit",
    "AuthenticationError",
    "ControlPlaneDeadlineError",
    "ControlPlaneUnavailableError",
    "CrossLanguageError",
    "GetTimeoutError",
    "JobSubmissionError",
    "LocalRayletDiedError",
    "MessageTooLargeError",
    "NoRuntimeError",
    "NodeDiedError",
    "NodeDrainRefusedError",
    "NodeNotFoundError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedLineageEvictedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectRefStreamEndOfStreamError",
    "ObjectStoreFullError",
    "OptionsError",
    "OufOfBandObjectRefSerializationException",
    "OutOfDiskError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PeerUnavailableError",
    "PendingCallsLimitExceeded",
    "PendingCallsLimitExceededError",
    "PlasmaObjectNotAvailable",
    "RayActorError",
    "RayCgraphCapacityExceeded",
    "RayChannelError",
    "RayChannelTimeoutError",
    "RayDirectTransportError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "ReferenceCountingAssertionError",
    "ReturnValidationError",
    "RpcDeadlineExceededError",
    "RpcError",
    "RpcFailedError",
    "RuntimeEnvSetupError",
    "RuntimeShutDownError",
    "SerializationError",
    "StateApiError",
    "TaskCancelledError",
    "TaskError",
    "TaskPlacementGroupRemoved",
    "TaskUnschedulableError",
    "UnsafeDirectoryError",
    "UnserializableException",
    "UserCodeException",
    "WorkerCrashedError",
]


class ActorHubError(Exception):
    """Base of every error actorhub raises on its own account."""


class ActorHubSystemError(ActorHubError):
    """actorhub itself failed: a cluster process is unreachable or an invariant broke."""


class RpcFailedError(ActorHubSystemError):
    """An RPC to another cluster process failed.

    `peer` names the process ("the hub at 127.0.0.1:6379"), `operation` the RPC ("KillActor"),
    `code` gRPC's status code and `details` the peer's or gRPC's explanation.
    """

    def __init__(
        self, message: str, *, peer: str = "", operation: str = "", code: grpc.StatusCode | None = None,
        details: str = "",
    ) -> None:
        super().__init__(message)
        self.peer = peer
        self.operation = operation
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: the default reduce would call __init__ with the message alone.
        return (_rebuild_rpc_error, (type(self), str(self), self.peer, self.operation, self.code, self.details))


def _rebuild_rpc_error(
    cls: type[RpcFailedError], message: str, peer: str, operation: str, code: Any, details: str
) -> RpcFailedError:
    return cls(message, peer=peer, operation=operation, code=code, details=details)


class PeerUnavailableError(RpcFailedError):
    """The peer could not be reached: nothing listens at its address, or the connection broke."""


class RpcDeadlineExceededError(RpcFailedError, TimeoutError):
    """The peer did not answer within the call's deadline (stopped, hung or overloaded)."""


class ControlPlaneUnavailableError(PeerUnavailableError):
    """The hub (the control plane) did not answer within the operation's deadline: it is down,
    or restarting and recovering its state. Calls between actors go on meanwhile; what needs
    the hub (creating, looking up or killing actors, new task leases) can be tried again."""


class ControlPlaneDeadlineError(ControlPlaneUnavailableError, RpcDeadlineExceededError):
    """The hub took a call in and did not answer within its deadline (stopped, hung, or busy
    recovering): an outage that is also a deadline, so `except TimeoutError` and
    `except ControlPlaneUnavailableError` both catch it."""


class MessageTooLargeError(RpcFailedError):
    """A message was over the configured `max_message_bytes`; the error names the limit."""


class ActorError(ActorHubError):
    """A call could not complete because of the actor, not because of the method's code."""

    def __init__(self, message: str, *, actor_id: str = "", class_name: str = "") -> None:
        super().__init__(message)
        self.actor_id = actor_id
        self.class_name = class_name


class ActorDiedError(ActorError):
    """The actor is dead, or its process died while running the call.

    The message names the cause: the constructor's exception, the exit code or signal of
    the worker process, or "killed by kill()".
    """


class ActorUnavailableError(ActorError):
    """The actor cannot be reached right now (for example it is restarting); it may recover."""


class PendingCallsLimitExceededError(ActorHubError):
    """A handle already has ``max_pending_calls`` calls in flight; this call was not sent."""


class StateApiError(ActorHubError):
    """A state API read (`actorhub.util.state`, `actorhub list`) failed: a bad filter or column,
    or part of the answer missing because a process that holds it did not answer (Ray's
    RayStateApiException)."""


class OptionsError(ActorHubError, ValueError):
    """An option or argument of a public call was unknown or had a bad value.

    Raised at the call that passed it (``.options()``, ``@remote(...)``, ``get_actor``, ``init``),
    before anything reaches the cluster; the message names the option and what was wrong.
    Also importable from ``actorhub.api.options``, where the options live.
    """


class ArgumentValidationError(ActorHubError, TypeError):
    """A typed actor's method (``@remote(typed=True)``) was called with arguments its type hints
    refuse; raised at the caller, before anything is sent. The message is pydantic's, field by field.
    """


class ReturnValidationError(ActorHubError, TypeError):
    """A typed actor's method returned a value its return type hint refuses (the call's error)."""


class GetTimeoutError(ActorHubError, TimeoutError):
    """``get`` did not see the object ready before its timeout."""


class ObjectLostError(ActorHubError):
    """The object's value cannot be recovered."""

    def __init__(self, message: str, *, object_id: str = "") -> None:
        super().__init__(message)
        self.object_id = object_id


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died, and the object with it."""


class NoRuntimeError(ActorHubError, RuntimeError):
    """This process has no actorhub runtime, and the code asking for one may not start one.

    Only the public entry points (init, remote, get, put, ...) start a local cluster; actorhub's
    own machinery, and a handle unpickled before init(), raise this instead.
    """


class RuntimeShutDownError(ActorHubError, RuntimeError):
    """Used after shutdown(): a handle or ref of the runtime that was shut down, or a public call
    made after shutdown() and before the next init(). Never starts a new cluster."""


class WorkerCrashedError(ActorHubError):
    """A task's worker process died while running it, more times than max_retries allows."""


class TaskCancelledError(ActorHubError):
    """The task was cancelled with cancel() before it finished."""


class TaskUnschedulableError(ActorHubError):
    """No node of the cluster can run the task: the node its scheduling strategy names is not
    alive, or none has the CPUs it asks for."""


class SerializationError(ActorHubError, TypeError):
    """A value could not be serialized; the message names which one and why."""


class TaskError(ActorHubError):
    """An exception raised by user code in a remote method or task.

    When the original exception class can be subclassed, ``get`` raises an instance of a class
    that derives from both ``TaskError`` and the original class, so ``except KeyError`` works.
    """

    _message: str
    cause: BaseException | None
    remote_traceback: str
    function_name: str
    cause_type_name: str

    def __init__(
        self,
        message: str,
        *,
        cause: BaseException | None = None,
        remote_traceback: str = "",
        function_name: str = "",
        cause_type_name: str = "",
    ) -> None:
        super().__init__(message)
        _init_task_error(self, message, cause, remote_traceback, function_name, cause_type_name)

    def __str__(self) -> str:
        head = f"{self.cause_type_name}: {self._message}" if self.cause_type_name else self._message
        where = f" in {self.function_name}" if self.function_name else ""
        if self.remote_traceback:
            return f"{head}\n\nRemote traceback{where}:\n{self.remote_traceback.rstrip()}"
        return head

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_task_error,
            (self._message, self.cause, self.remote_traceback, self.function_name, self.cause_type_name),
        )


def _init_task_error(
    err: TaskError,
    message: str,
    cause: BaseException | None,
    remote_traceback: str,
    function_name: str,
    cause_type_name: str,
) -> None:
    err._message = message
    err.cause = cause
    err.remote_traceback = remote_traceback
    err.function_name = function_name
    err.cause_type_name = cause_type_name


def _rebuild_task_error(
    message: str,
    cause: BaseException | None,
    remote_traceback: str,
    function_name: str,
    cause_type_name: str,
) -> TaskError:
    if cause is not None:
        return task_error_for(cause, message, remote_traceback, function_name, cause_type_name)
    return TaskError(
        message,
        remote_traceback=remote_traceback,
        function_name=function_name,
        cause_type_name=cause_type_name,
    )


_dual_classes: dict[type[BaseException], type[TaskError]] = {}


def task_error_for(
    cause: BaseException,
    message: str,
    remote_traceback: str,
    function_name: str,
    cause_type_name: str,
) -> TaskError:
    """A TaskError that is also an instance of ``type(cause)`` when Python allows it."""
    cls = type(cause)
    if isinstance(cause, TaskError):
        return cause
    dual = _dual_classes.get(cls)
    if dual is None:
        try:
            dual = type(f"TaskError({cls.__name__})", (TaskError, cls), {"__module__": __name__})
        except TypeError:
            # Some classes cannot be a second base (incompatible C layouts, @final types).
            dual = TaskError
        _dual_classes[cls] = dual
    err = dual.__new__(dual)
    err.args = cause.args
    try:
        err.__dict__.update(getattr(cause, "__dict__", {}))
    except (AttributeError, TypeError):
        pass
    _init_task_error(err, message, cause, remote_traceback, function_name, cause_type_name)
    return err


class UnsafeDirectoryError(ActorHubError, PermissionError):
    """A session root, session directory, token file or /dev/shm directory that another local
    user could control: not owned by this user, open to group or others, or a link elsewhere.

    `path` names it; the message says what is wrong and how to fix it.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ActorUnschedulableError(ActorHubError):
    """No node can run the actor: the node its hard NodeAffinitySchedulingStrategy names is not
    alive or could never fit it (or, with `_fail_on_unavailable`, has no room now)."""


class TaskPlacementGroupRemoved(ActorHubError):
    """The placement group the task was scheduled in was removed."""


class ActorPlacementGroupRemoved(ActorHubError):
    """The placement group the actor was scheduled in was removed."""


class AsyncioActorExit(ActorHubError):
    """An async actor ends itself (``exit_actor()`` inside a coroutine method)."""


class LocalRayletDiedError(ActorHubSystemError):
    """The node agent of this process's node died, so the process cannot go on."""


class NodeDiedError(ActorHubSystemError):
    """The node that ran the task or held the object died."""


class NodeNotFoundError(ActorHubError, LookupError):
    """The node named is not alive: unknown to the hub, dead, or removed by a drain."""


class NodeDrainRefusedError(ActorHubError, ValueError):
    """The node may not be drained (the head node)."""


class CrossLanguageError(ActorHubError):
    """An error raised by code in another language (actorhub runs Python only; kept for Ray programs)."""


class UserCodeException(ActorHubError):
    """User code raised while actorhub ran it outside a task (a serializer, a tracing hook)."""


class RuntimeEnvSetupError(ActorHubError):
    """A task's or actor's runtime environment could not be set up; the message says why."""


class ObjectStoreFullError(ActorHubError):
    """The object store had no room for an object even after spilling."""


class OutOfDiskError(ActorHubError):
    """The disk that spilled objects go to is full."""


class OutOfMemoryError(ActorHubError):
    """The node ran low on memory and killed the worker running the task."""


class PlasmaObjectNotAvailable(ActorHubError):
    """The object was not available within the given time."""


class ObjectFetchTimedOutError(ObjectLostError):
    """No copy of the object could be found to fetch."""


class ObjectFreedError(ObjectLostError):
    """The object was freed explicitly while a reference to it still existed."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """The object was deleted while a reference to it still existed (a bug in reference counting)."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object is lost and cannot be made again: a put, an actor's result, or borrowed."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    """The object is lost and its task has no retries left to make it again."""


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    """The object is lost and how to make it again was not kept."""


class ObjectRefStreamEndOfStreamError(ActorHubError):
    """A streaming generator has no more refs to give."""


class OufOfBandObjectRefSerializationException(ActorHubError):
    """A ref was pickled outside a call where that was not allowed (Ray's spelling kept)."""


class UnserializableException(ActorHubError):
    """A remote exception could not be unpickled; the message carries its text and traceback."""


class AuthenticationError(ActorHubError):
    """The cluster refused this process's token, or it had none."""


class JobSubmissionError(ActorHubError, RuntimeError):
    """The Job API (the dashboard) refused a request, answered with an error, or could not be
    reached; the message names the request and says why (a RuntimeError, as Ray's client raises).
    `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class RayChannelError(ActorHubSystemError):
    """A compiled-graph channel failed (actorhub has no compiled graphs; kept for Ray programs)."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled-graph channel operation timed out."""


class RayCgraphCapacityExceeded(ActorHubSystemError):
    """A compiled graph had more executions in flight than its capacity."""


class RayDirectTransportError(ActorHubSystemError):
    """A direct (device to device) transfer failed."""


RayError = ActorHubError
RayActorError = ActorError
RayTaskError = TaskError
RaySystemError = ActorHubSystemError
PendingCallsLimitExceeded = PendingCallsLimitExceededError
RpcError = RpcFailedError
