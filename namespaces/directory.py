"""The name directory: `(namespace, name)` -> the actor that holds it.

Pure state with no lock of its own: the hub keeps it inside its actor table, under the
table's lock, so claiming a name and creating the actor are one step (get-or-create is atomic
across every caller in the cluster).
"""

from __future__ import annotations

from collections.abc import Iterator


class NameTakenError(Exception):
    """The name is held by another live actor in that namespace."""

    def __init__(self, namespace: str, name: str, holder: str) -> None:
        super().__init__(f"an actor named '{name}' already exists in namespace '{namespace}'")
        self.namespace = namespace
        self.name = name
        self.holder = holder


class NameDirectory:
    """Names of actors that are not DEAD; a dead actor's name is free for a new one."""

    def __init__(self) -> None:
        self._holders: dict[tuple[str, str], str] = {}

    def holder(self, namespace: str, name: str) -> str | None:
        """The id of the actor holding `name` in `namespace`, if any."""
        return self._holders.get((namespace, name))

    def claim(self, namespace: str, name: str, actor_id: str) -> None:
        """Give `name` to `actor_id`; NameTakenError if another actor holds it."""
        holder = self._holders.setdefault((namespace, name), actor_id)
        if holder != actor_id:
            raise NameTakenError(namespace, name, holder)

    def release(self, namespace: str, name: str, actor_id: str) -> bool:
        """Free `name` if `actor_id` holds it (a restarted or replaced holder keeps it)."""
        if self._holders.get((namespace, name)) != actor_id:
            return False
        del self._holders[(namespace, name)]
        return True

    def __len__(self) -> int:
        return len(self._holders)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._holders)
