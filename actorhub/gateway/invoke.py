"""One call through the gateway, and what its failures mean to a caller in another language.

HTTP and gRPC share this; each maps a `GatewayError`'s kind to its own status:

    kind              HTTP  gRPC              when
    INVALID_ARGUMENT  400   INVALID_ARGUMENT  the arguments do not fit the hints; a malformed request
    NOT_FOUND         404   NOT_FOUND         no live actor by that name, or no such exposed method;
                                              also an actor that died for good during the call
    UNAVAILABLE       503   UNAVAILABLE       the actor cannot be reached now: a retry may succeed
    INTERNAL          500   INTERNAL          the method raised (type: its exception's class name),
                                              or its result has no JSON form
    UNAUTHENTICATED   401   UNAUTHENTICATED   no cluster token, or another one

As in Ray, ActorUnavailableError means the actor may recover (it is restarting, or a network
problem cut it off), and ActorDiedError that the process running the call died. A died actor
whose name still resolves is restarting (max_restarts) or was replaced: 503, and the next call
goes to it. One whose name is gone (it was killed, or ran out of restarts) will not come back:
404, as for any unknown actor, with type ActorDiedError and the death's cause. Either way the
call may have run partly, as Ray's at-most-once calls.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from actorhub.exceptions import (
    ActorDiedError,
    ActorHubError,
    ActorUnavailableError,
    ArgumentValidationError,
    PeerUnavailableError,
    PendingCallsLimitExceededError,
    TaskError,
)
from actorhub.gateway.directory import ActorDirectory, ActorNotFoundError
from actorhub.gateway.interface import ResultNotSerializableError

log = logging.getLogger(__name__)


class ErrorKind(enum.Enum):
    """A failure's meaning; the value is its HTTP status."""

    INVALID_ARGUMENT = 400
    UNAUTHENTICATED = 401
    NOT_FOUND = 404
    INTERNAL = 500
    UNAVAILABLE = 503


class GatewayError(ActorHubError):
    """A call's failure as the caller in another language sees it: a kind, a type name and a message."""

    def __init__(self, kind: ErrorKind, type_name: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.type_name = type_name
        self.message = message

    def as_json(self) -> dict[str, Any]:
        return {"error": {"type": self.type_name, "message": self.message}}


class Invoker:
    def __init__(self, directory: ActorDirectory) -> None:
        self.directory = directory

    async def invoke(self, namespace: str, actor_name: str, method_name: str, args: Sequence[Any],
                     kwargs: Mapping[str, Any]) -> Any:
        """Call the method with JSON arguments and wait; its result as JSON-able data."""
        try:
            actor = await self.directory.find(namespace, actor_name)
            method = actor.method(method_name)
        except ActorNotFoundError as e:
            raise GatewayError(ErrorKind.NOT_FOUND, type(e).__name__, str(e)) from None
        except PeerUnavailableError as e:  # the hub is away (restarting): the lookup may be tried again
            raise GatewayError(ErrorKind.UNAVAILABLE, type(e).__name__, str(e)) from None
        try:
            call_args, call_kwargs = method.to_python(args, kwargs)
        except ArgumentValidationError as e:
            raise GatewayError(ErrorKind.INVALID_ARGUMENT, "ArgumentValidationError", str(e)) from None
        try:
            value = await getattr(actor.handle, method_name).remote(*call_args, **call_kwargs)
        except TaskError as e:
            cause = e.cause
            # The class's own name ("KeyError", "OutOfStock"), not its module's path.
            type_name = type(cause).__name__ if cause is not None else e.cause_type_name.rpartition(".")[2]
            message = str(cause) if cause is not None else e._message
            type_name = type_name or "TaskError"
            raise GatewayError(ErrorKind.INTERNAL, type_name, message) from None
        except ArgumentValidationError as e:  # the handle's own check; the conversion should have refused first
            raise GatewayError(ErrorKind.INVALID_ARGUMENT, "ArgumentValidationError", str(e)) from None
        except ActorDiedError as e:
            self.directory.forget(actor)
            raise await self._died(namespace, actor_name, e) from None
        except (ActorUnavailableError, PeerUnavailableError, PendingCallsLimitExceededError) as e:
            self.directory.forget(actor)
            raise GatewayError(ErrorKind.UNAVAILABLE, type(e).__name__, str(e)) from None
        except ActorHubError as e:
            raise GatewayError(ErrorKind.INTERNAL, type(e).__name__, str(e)) from None
        except Exception as e:  # the gateway's own failure: still an answer in the error shape
            log.exception("%s.%s in namespace %r failed in the gateway", actor_name, method_name, namespace)
            raise GatewayError(ErrorKind.INTERNAL, type(e).__name__, str(e)) from None
        try:
            return method.to_json(value)
        except ResultNotSerializableError as e:
            raise GatewayError(ErrorKind.INTERNAL, "ResultNotSerializableError", str(e)) from None

    async def _died(self, namespace: str, actor_name: str, error: ActorDiedError) -> GatewayError:
        """404 when the actor is gone for good (its name is free), else 503: it is coming back."""
        try:
            await self.directory.find(namespace, actor_name)
        except ActorNotFoundError:
            return GatewayError(ErrorKind.NOT_FOUND, "ActorDiedError", str(error))
        except ActorHubError:
            pass
        return GatewayError(ErrorKind.UNAVAILABLE, "ActorDiedError", str(error))
