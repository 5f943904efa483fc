"""Errors as values (`actorhub.wire.errors`): exceptions to RemoteError and back, and RemoteError
to and from the ErrorInfo message at the wire boundary. No processes."""

from __future__ import annotations

import pytest

from actorhub._proto.v1 import common_pb2
from actorhub.exceptions import ActorDiedError, ObjectLostError, TaskError
from actorhub.wire.errors import (
    ErrorKind,
    RemoteError,
    describe,
    error_to_proto,
    from_error_info,
    system_error,
    system_error_info,
    to_error_info,
    to_exception,
)


def test_kinds_are_the_protos_numbers() -> None:
    assert {k.name: k.value for k in ErrorKind} == {
        name.removeprefix("ERROR_KIND_"): number for name, number in common_pb2.ErrorKind.items()
    }


def test_remote_error_round_trips_through_error_info() -> None:
    error = describe(ValueError("bad"))
    assert error.kind is ErrorKind.APPLICATION and error.type_name == "builtins.ValueError"
    assert from_error_info(to_error_info(error)) == error
    assert error_to_proto(ValueError("bad")) == to_error_info(error)
    # A kind from a newer peer reads as unspecified: raised as a TaskError, as before.
    assert from_error_info(common_pb2.ErrorInfo(message="m", kind=99)).kind is ErrorKind.UNSPECIFIED  # type: ignore[arg-type]


def test_system_errors_as_value_and_as_message() -> None:
    assert system_error("gone", ErrorKind.ACTOR_DIED) == RemoteError(message="gone", kind=ErrorKind.ACTOR_DIED)
    assert system_error_info("gone", ErrorKind.ACTOR_DIED) == common_pb2.ErrorInfo(
        message="gone", kind=common_pb2.ERROR_KIND_ACTOR_DIED
    )


def test_to_exception_by_kind() -> None:
    assert isinstance(to_exception(system_error("x", ErrorKind.ACTOR_DIED)), ActorDiedError)
    assert isinstance(to_exception(system_error("x", ErrorKind.OBJECT_LOST)), ObjectLostError)
    raised = to_exception(describe(KeyError("k")), function_name="f")
    assert isinstance(raised, TaskError) and isinstance(raised, KeyError)
    with pytest.raises(KeyError):
        raise raised
