"""What the autoscaler needs from wherever nodes come from: four operations.

A provider starts a node of a configured type and stops one; it lists the nodes it started that
are not being stopped, and says which type each is. A node a provider starts registers with the
hub under the id the provider returned, which is how the autoscaler matches the hub's view of a
node (its load) with the provider's (its type). Everything else (when to add or remove nodes,
how many, of which type) is the autoscaler's, so a provider stays a thin adapter: the local one
(`local_provider.py`) starts node agents as processes on this machine; a Kubernetes one would
create and delete worker pods that run `actorhub start --address`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["NodeProvider"]


class NodeProvider(ABC):
    @abstractmethod
    def create_node(self, node_type: str) -> str:
        """Start a node of `node_type` (a key of the config's available_node_types); its id,
        which is also the id it registers with the hub under. Returns once it is starting."""

    @abstractmethod
    def terminate_node(self, node_id: str) -> None:
        """Stop a node this provider started; returns without waiting for it to be gone."""

    @abstractmethod
    def non_terminated_nodes(self) -> list[str]:
        """The nodes this provider started that are neither stopped nor being stopped."""

    @abstractmethod
    def node_type_of(self, node_id: str) -> str:
        """The type a node of `non_terminated_nodes()` was started as."""

    def close(self) -> None:  # noqa: B027 - most providers hold nothing
        """Release what the provider holds (not its nodes: they serve the cluster on)."""
