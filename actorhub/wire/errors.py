"""Errors on the wire: exceptions to and from the ErrorInfo message.

The text fields are always filled so a receiver that cannot unpickle the exception (its class
is not importable there, or it never pickled) still raises something readable.
"""

from __future__ import annotations

import traceback
from types import TracebackType

import cloudpickle

from actorhub._proto.v1 import common_pb2
from actorhub.exceptions import (
    ActorDiedError,
    ActorHubError,
    ActorHubSystemError,
    ActorUnavailableError,
    ObjectLostError,
    TaskCancelledError,
    TaskError,
    TaskUnschedulableError,
    WorkerCrashedError,
    task_error_for,
)
from actorhub.runtime.serialization import dumps

ErrorKind = common_pb2.ErrorKind


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def error_to_proto(
    exc: BaseException,
    kind: common_pb2.ErrorKind = common_pb2.ERROR_KIND_APPLICATION,
    tb: TracebackType | None = None,
    skip_frames: int = 0,
) -> common_pb2.ErrorInfo:
    """Describe `exc`; `skip_frames` drops actorhub's own frames from the top of the traceback."""
    if isinstance(exc, TaskError) and kind == common_pb2.ERROR_KIND_APPLICATION:
        # An error that came from further away: keep its original remote text.
        return common_pb2.ErrorInfo(
            type_name=exc.cause_type_name or qualified_name(type(exc)),
            message=exc._message,
            traceback=exc.remote_traceback,
            pickled=_try_pickle(exc.cause) if exc.cause is not None else b"",
            kind=kind,
        )
    frames = traceback.extract_tb(tb if tb is not None else exc.__traceback__)
    text = "".join(traceback.format_list(frames[skip_frames:]))
    text += "".join(traceback.format_exception_only(type(exc), exc))
    return common_pb2.ErrorInfo(
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


def system_error(message: str, kind: common_pb2.ErrorKind) -> common_pb2.ErrorInfo:
    return common_pb2.ErrorInfo(type_name="", message=message, kind=kind)


def error_from_proto(
    info: common_pb2.ErrorInfo, *, function_name: str = "", actor_id: str = "", class_name: str = ""
) -> ActorHubError:
    """The exception to raise at the caller for `info`."""
    kind = info.kind
    if kind == common_pb2.ERROR_KIND_ACTOR_DIED:
        return ActorDiedError(info.message, actor_id=actor_id, class_name=class_name)
    if kind == common_pb2.ERROR_KIND_ACTOR_UNAVAILABLE:
        return ActorUnavailableError(info.message, actor_id=actor_id, class_name=class_name)
    if kind == common_pb2.ERROR_KIND_OBJECT_LOST:
        return ObjectLostError(info.message)
    if kind == common_pb2.ERROR_KIND_WORKER_CRASHED:
        return WorkerCrashedError(info.message)
    if kind == common_pb2.ERROR_KIND_TASK_CANCELLED:
        return TaskCancelledError(info.message)
    if kind == common_pb2.ERROR_KIND_TASK_UNSCHEDULABLE:
        return TaskUnschedulableError(info.message)
    if kind == common_pb2.ERROR_KIND_SYSTEM:
        return ActorHubSystemError(info.message)
    cause: BaseException | None = None
    if info.pickled:
        try:
            loaded = cloudpickle.loads(info.pickled)
            if isinstance(loaded, BaseException):
                cause = loaded
        except Exception:
            cause = None
    if cause is None:
        return TaskError(
            info.message,
            remote_traceback=info.traceback,
            function_name=function_name,
            cause_type_name=info.type_name,
        )
    return task_error_for(cause, info.message, info.traceback, function_name, info.type_name)
