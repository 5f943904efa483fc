"""The hub client's checkpoint calls (hub/checkpoint_service.py), mixed into `HubClient`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from actorhub._proto.v1 import hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines

R = TypeVar("R")


class CheckpointCalls:
    """A hub that refuses (the actor is dead, unknown, or has a newer process) raises
    RpcFailedError with NOT_FOUND; one that is away raises ControlPlaneUnavailableError."""

    deadlines: RpcDeadlines

    if TYPE_CHECKING:
        def _call(self, operation: str, method: Callable[..., R], request: Any, timeout: float, *,
                  repeat: bool, wait_for_ready: bool | None = None) -> R: ...

        def _stub(self) -> hub_pb2_grpc.HubStub: ...

    def save_checkpoint(self, actor_id: str, incarnation: int, state: bytes) -> None:
        """Returns once the checkpoint is on the hub's disk. Repeatable: the same state again."""
        request = hub_pb2.CheckpointSaveRequest(actor_id=actor_id, incarnation=incarnation, state=state)
        self._call("SaveCheckpoint", self._stub().SaveCheckpoint, request, self.deadlines.control_s, repeat=True)

    def load_checkpoint(self, actor_id: str) -> bytes | None:
        request = hub_pb2.CheckpointLoadRequest(actor_id=actor_id)
        reply: hub_pb2.CheckpointLoadReply = self._call(
            "LoadCheckpoint", self._stub().LoadCheckpoint, request, self.deadlines.control_s, repeat=True)
        return reply.state if reply.found else None
