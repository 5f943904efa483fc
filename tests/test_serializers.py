"""register_serializer for classes that do not pickle, and inspect_serializability."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import actorhub
from actorhub.exceptions import SerializationError
from actorhub.util import deregister_serializer, inspect_serializability, register_serializer


class Connection:
    """Holds a lock, so it does not pickle; what it needs to be remade is its address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.lock = threading.Lock()


@pytest.fixture
def connection_serializer() -> Iterator[None]:
    register_serializer(Connection, serializer=lambda c: c.address, deserializer=Connection)
    try:
        yield
    finally:
        deregister_serializer(Connection)


@actorhub.remote
def address_of(connection: Any) -> tuple[str, bool]:
    return connection.address, isinstance(connection.lock, type(threading.Lock()))


def test_a_registered_serializer_carries_a_class_that_does_not_pickle(
    shared_cluster: Any, connection_serializer: None
) -> None:
    assert actorhub.get(address_of.remote(Connection("db:5432"))) == ("db:5432", True)
    # Inside other values too, and through put.
    assert actorhub.get(actorhub.put({"c": [Connection("x")]}))["c"][0].address == "x"


def test_without_the_serializer_the_argument_is_named(shared_cluster: Any) -> None:
    with pytest.raises(SerializationError, match="argument 0 of address_of"):
        address_of.remote(Connection("db:5432"))


def test_register_serializer_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="takes a class"):
        register_serializer("Connection", serializer=str, deserializer=str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="deserializer for Connection must be callable"):
        register_serializer(Connection, serializer=str, deserializer="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be replaced"):
        register_serializer(int, serializer=str, deserializer=int)
    with pytest.raises(ValueError, match="no serializer is registered"):
        deregister_serializer(Connection)


def test_inspect_serializability_names_the_part_that_fails() -> None:
    lock = threading.Lock()

    def uses_lock() -> None:
        with lock:
            pass

    out = io.StringIO()
    ok, failures = inspect_serializability(uses_lock, print_file=out)
    assert not ok
    assert [(f.name, f.obj) for f in failures] == [("closure variable 'lock' of " + uses_lock.__qualname__, lock)]
    assert "cannot be serialized" in out.getvalue()
    holder = {"fine": 1, "conn": Connection("a")}
    ok, failures = inspect_serializability(holder, name="holder", print_file=out)
    assert not ok and {f.name for f in failures} == {"Connection.lock"}
    assert inspect_serializability([1, "two"], print_file=out) == (True, set())
