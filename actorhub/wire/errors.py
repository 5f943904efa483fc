"""Errors as values: exceptions to and from `RemoteError`, and `RemoteError` to and from the
ErrorInfo message.

A call's error is data: the object table keeps it, the task submitter decides retries on its
kind, and `get()` raises it. Above the wire it is a `RemoteError`; the ErrorInfo message
exists only where replies are read and written (this module's `*_error_info` functions).
The text fields are always filled so a receiver that cannot unpickle the exception (its class
is not importable there, or it never pickled) still raises something readable.
"""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import cloudpickle

from actorhub._proto.v1 import common_pb2
from actorhub.exceptions import (
    ActorDiedError,
    ActorHubError,
    ActorHubSystemError,
    ActorUnavailableError,
    ActorUnschedulableError,
    ObjectLostError,
    ObjectReconstructionFailedError,
    ObjectReconstructionFailedLineageEvictedError,
    ObjectReconstructionFailedMaxAttemptsExceededError,
    RuntimeEnvSetupError,
    TaskCancelledError,
    TaskError,
    TaskPlacementGroupRemoved,
    TaskUnschedulableError,
    WorkerCrashedError,
    task_error_for,
)
from actorhub.runtime.serialization import dumps


class ErrorKind(enum.IntEnum):
    """What failed. The values are the proto's ErrorKind numbers, so converting is free."""

    UNSPECIFIED = common_pb2.ERROR_KIND_UNSPECIFIED
    APPLICATION = common_pb2.ERROR_KIND_APPLICATION  # raised by user code: a TaskError at get()
    ACTOR_DIED = common_pb2.ERROR_KIND_ACTOR_DIED
    ACTOR_UNAVAILABLE = common_pb2.ERROR_KIND_ACTOR_UNAVAILABLE
    SYSTEM = common_pb2.ERROR_KIND_SYSTEM  # a bug or broken invariant inside actorhub
    OBJECT_LOST = common_pb2.ERROR_KIND_OBJECT_LOST
    WORKER_CRASHED = common_pb2.ERROR_KIND_WORKER_CRASHED  # a task's worker died, retries used up
    TASK_CANCELLED = common_pb2.ERROR_KIND_TASK_CANCELLED
    TASK_UNSCHEDULABLE = common_pb2.ERROR_KIND_TASK_UNSCHEDULABLE
    RUNTIME_ENV_SETUP = common_pb2.ERROR_KIND_RUNTIME_ENV_SETUP  # a runtime_env failed on its node
    # A lost object lineage reconstruction cannot make again (tasks/lineage.py), and why.
    OBJECT_RECONSTRUCTION_FAILED = common_pb2.ERROR_KIND_OBJECT_RECONSTRUCTION_FAILED
    OBJECT_RECONSTRUCTION_MAX_ATTEMPTS = common_pb2.ERROR_KIND_OBJECT_RECONSTRUCTION_MAX_ATTEMPTS
    OBJECT_RECONSTRUCTION_LINEAGE_EVICTED = common_pb2.ERROR_KIND_OBJECT_RECONSTRUCTION_LINEAGE_EVICTED
    ACTOR_UNSCHEDULABLE = common_pb2.ERROR_KIND_ACTOR_UNSCHEDULABLE  # its hard node affinity cannot hold
    PLACEMENT_GROUP_REMOVED = common_pb2.ERROR_KIND_PLACEMENT_GROUP_REMOVED  # a task's group went first


_RECONSTRUCTION_ERRORS: dict[ErrorKind, type[ObjectLostError]] = {
    ErrorKind.OBJECT_RECONSTRUCTION_FAILED: ObjectReconstructionFailedError,
    ErrorKind.OBJECT_RECONSTRUCTION_MAX_ATTEMPTS: ObjectReconstructionFailedMaxAttemptsExceededError,
    ErrorKind.OBJECT_RECONSTRUCTION_LINEAGE_EVICTED: ObjectReconstructionFailedLineageEvictedError,
}

# A kind this process does not know (a newer peer's) reads as UNSPECIFIED: raised as a TaskError,
# as an unknown kind always was.
_KINDS: dict[int, ErrorKind] = {k.value: k for k in ErrorKind}


@dataclass(frozen=True, slots=True)
class RemoteError:
    """A failure that is a call's (or an object's) result. The defaults are the proto's."""

    type_name: str = ""  # qualified class name, e.g. "builtins.KeyError"; "" for actorhub's own
    message: str = ""  # str(exception)
    traceback: str = ""  # the formatted remote traceback
    pickled: bytes = b""  # cloudpickle of the exception, empty when it does not round-trip
    kind: ErrorKind = ErrorKind.UNSPECIFIED


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- exceptions to and from RemoteError -------------------------------------------------------------
def describe(
    exc: BaseException,
    kind: ErrorKind = ErrorKind.APPLICATION,
    tb: TracebackType | None = None,
    skip_frames: int = 0,
) -> RemoteError:
    """Describe `exc`; `skip_frames` drops actorhub's own frames from the top of the traceback."""
    if isinstance(exc, TaskError) and kind == ErrorKind.APPLICATION:
        # An error that came from further away: keep its original remote text.
        return RemoteError(
            type_name=exc.cause_type_name or qualified_name(type(exc)),
            message=exc._message,
            traceback=exc.remote_traceback,
            pickled=_try_pickle(exc.cause) if exc.cause is not None else b"",
            kind=kind,
        )
    frames = traceback.extract_tb(tb if tb is not None else exc.__traceback__)
    text = "".join(traceback.format_list(frames[skip_frames:]))
    text += "".join(traceback.format_exception_only(type(exc), exc))
    return RemoteError(
        type_name=qualified_name(type(exc)),
        message=str(exc),
        traceback=text,
        pickled=_try_pickle(exc),
        kind=kind,
    )


def _try_pickle(exc: BaseException) -> bytes:
    try:
        # Drop the traceback: frames do not pickle and the text already carries them.
        data = dumps(exc.with_traceback(None))
        cloudpickle.loads(data)  # an exception whose __init__ does not round-trip is text only
        return data
    except Exception:
        return b""


def system_error(message: str, kind: ErrorKind) -> RemoteError:
    """A failure actorhub itself reports (no user exception behind it)."""
    return RemoteError(message=message, kind=kind)


def to_exception(
    error: RemoteError, *, function_name: str = "", actor_id: str = "", class_name: str = ""
) -> ActorHubError:
    """The exception to raise at the caller for `error`."""
    kind = error.kind
    if kind == ErrorKind.ACTOR_DIED:
        return ActorDiedError(error.message, actor_id=actor_id, class_name=class_name)
    if kind == ErrorKind.ACTOR_UNAVAILABLE:
        return ActorUnavailableError(error.message, actor_id=actor_id, class_name=class_name)
    if kind == ErrorKind.OBJECT_LOST:
        return ObjectLostError(error.message)
    if kind == ErrorKind.WORKER_CRASHED:
        return WorkerCrashedError(error.message)
    if kind == ErrorKind.TASK_CANCELLED:
        return TaskCancelledError(error.message)
    if kind == ErrorKind.TASK_UNSCHEDULABLE:
        return TaskUnschedulableError(error.message)
    if kind == ErrorKind.RUNTIME_ENV_SETUP:
        return RuntimeEnvSetupError(error.message)
    if kind == ErrorKind.ACTOR_UNSCHEDULABLE:
        return ActorUnschedulableError(error.message)
    if kind == ErrorKind.PLACEMENT_GROUP_REMOVED:
        return TaskPlacementGroupRemoved(error.message)
    if kind == ErrorKind.SYSTEM:
        return ActorHubSystemError(error.message)
    if kind in _RECONSTRUCTION_ERRORS:
        return _RECONSTRUCTION_ERRORS[kind](error.message)
    cause: BaseException | None = None
    if error.pickled:
        try:
            loaded = cloudpickle.loads(error.pickled)
            if isinstance(loaded, BaseException):
                cause = loaded
        except Exception:
            cause = None
    if cause is None:
        return TaskError(
            error.message,
            remote_traceback=error.traceback,
            function_name=function_name,
            cause_type_name=error.type_name,
        )
    return task_error_for(cause, error.message, error.traceback, function_name, error.type_name)


# -- RemoteError to and from the ErrorInfo message (the wire boundary) ---------------------------------
def from_error_info(info: common_pb2.ErrorInfo) -> RemoteError:
    """Read a reply's error; called only for replies that carry one."""
    return RemoteError(info.type_name, info.message, info.traceback, info.pickled,
                       _KINDS.get(info.kind, ErrorKind.UNSPECIFIED))


def to_error_info(error: RemoteError) -> common_pb2.ErrorInfo:
    return common_pb2.ErrorInfo(
        type_name=error.type_name, message=error.message, traceback=error.traceback, pickled=error.pickled,
        kind=cast(common_pb2.ErrorKind, int(error.kind)),
    )


def error_to_proto(
    exc: BaseException,
    kind: ErrorKind = ErrorKind.APPLICATION,
    tb: TracebackType | None = None,
    skip_frames: int = 0,
) -> common_pb2.ErrorInfo:
    """`describe(exc)` as the message, for servers that write it into a reply."""
    return to_error_info(describe(exc, kind, tb, skip_frames))


def system_error_info(message: str, kind: ErrorKind) -> common_pb2.ErrorInfo:
    """`system_error` as the message, for servers (the hub's death causes, the node's replies)."""
    return common_pb2.ErrorInfo(type_name="", message=message, kind=cast(common_pb2.ErrorKind, int(kind)))
