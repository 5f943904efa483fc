"""Namespaces and the names in them: how applications find each other's actors.

Every job runs in a namespace (its own anonymous one unless `init(namespace=...)`), and a
named actor is unique by `(namespace, name)`. This package holds those rules and the name
directory the hub keeps; the public lookups (`get_actor`, `list_named_actors`) are in
`actorhub.namespaces.lookup`.

`rules` and `directory` are pure: they import nothing from the rest of actorhub, so the hub
can keep its directory with them while this package still builds on the kernel.
"""

from actorhub.namespaces.directory import NameDirectory, NameTakenError
from actorhub.namespaces.rules import (
    SYSTEM_NAMESPACE,
    anonymous_namespace,
    is_system_namespace,
    validate_name,
    validate_namespace,
)

__all__ = [
    "SYSTEM_NAMESPACE",
    "NameDirectory",
    "NameTakenError",
    "anonymous_namespace",
    "is_system_namespace",
    "validate_name",
    "validate_namespace",
]
