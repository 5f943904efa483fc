"""The name directory and namespace rules, without processes."""

from __future__ import annotations

import pytest

from actorhub.namespaces import (
    SYSTEM_NAMESPACE,
    NameDirectory,
    NameTakenError,
    anonymous_namespace,
    is_system_namespace,
    validate_name,
)


def test_a_name_is_unique_per_namespace_and_free_again_once_released() -> None:
    names = NameDirectory()
    names.claim("shop", "counter", "a1")
    names.claim("other", "counter", "b1")  # the same name in another namespace is another name
    with pytest.raises(NameTakenError, match="'counter' already exists in namespace 'shop'") as info:
        names.claim("shop", "counter", "a2")
    assert info.value.holder == "a1"
    assert names.holder("shop", "counter") == "a1"
    assert not names.release("shop", "counter", "a2"), "only the holder frees a name"
    assert names.release("shop", "counter", "a1")
    names.claim("shop", "counter", "a2")
    assert names.holder("shop", "counter") == "a2"
    assert sorted(names) == [("other", "counter"), ("shop", "counter")]


def test_claiming_again_by_the_holder_is_not_an_error() -> None:
    names = NameDirectory()
    names.claim("ns", "x", "a1")
    names.claim("ns", "x", "a1")
    assert len(names) == 1


def test_anonymous_namespaces_are_fresh_and_not_the_system_one() -> None:
    made = {anonymous_namespace() for _ in range(100)}
    assert len(made) == 100
    assert not any(is_system_namespace(ns) for ns in made)
    assert is_system_namespace(SYSTEM_NAMESPACE)


def test_bad_names_are_refused_with_what_was_wrong() -> None:
    assert validate_name("svc") == "svc"
    with pytest.raises(ValueError, match="must not be empty"):
        validate_name("")
    with pytest.raises(TypeError, match="must be a str, not int"):
        validate_name(3)
