"""What a namespace and an actor name may be, and the namespaces actorhub gives out itself."""

from __future__ import annotations

import uuid

# actorhub's own actors (task lease desks and executors) live here, out of users' listings.
SYSTEM_NAMESPACE = "_actorhub"
# A job that names no namespace gets one of its own, so two applications never share names
# by accident (Ray's rule); the prefix marks it as made up.
_ANONYMOUS_PREFIX = "anon-"


def anonymous_namespace() -> str:
    """A fresh namespace for a job that did not ask for one."""
    return f"{_ANONYMOUS_PREFIX}{uuid.uuid4().hex[:12]}"


def is_system_namespace(namespace: str) -> bool:
    return namespace == SYSTEM_NAMESPACE


def validate_name(name: object, what: str = "actor name") -> str:
    """`name` if it is a usable name, else ValueError that says what was wrong with it."""
    if not isinstance(name, str):
        raise TypeError(f"an {what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"an {what} must not be empty")
    return name
