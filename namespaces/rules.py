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
    """`name` if it is a usable name, else TypeError or ValueError that says what was wrong.

    A name crosses the wire as a protobuf string, which must be UTF-8: a str that cannot be
    encoded (a lone surrogate, as `os.fsdecode` or a bad `surrogateescape` leaves) would fail
    deep in the client with a bare UnicodeEncodeError, so it is refused here, by name.
    """
    if not isinstance(name, str):
        raise TypeError(f"{_article(what)} {what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{_article(what)} {what} must not be empty")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{_article(what)} {what} must be encodable as UTF-8; {name!r} holds "
            f"{name[e.start:e.end]!r} at index {e.start}"
        ) from None
    return name


def validate_namespace(namespace: object, *, allow_system: bool = False) -> str:
    """`namespace` if users may name it, else TypeError or ValueError.

    The system namespace holds actorhub's own lease desks and task executors: a user who
    could create, look up or kill actors there could take a node's desk away from its tasks.
    Only actorhub's own code passes `allow_system=True`; the hub itself reserves nothing.
    """
    checked = validate_name(namespace, "namespace")
    if is_system_namespace(checked) and not allow_system:
        raise ValueError(f"the namespace {checked!r} is reserved for actorhub's own actors")
    return checked


def _article(what: str) -> str:
    return "an" if what[:1] in "aeiou" else "a"
