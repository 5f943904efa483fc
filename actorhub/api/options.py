"""Typed, validated options for actors and calls.

Unknown options and bad values raise `OptionsError` naming the option, at the call that
passed them, instead of surfacing later inside the cluster.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from actorhub.exceptions import ActorHubError
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy


class OptionsError(ActorHubError, ValueError):
    """An option was unknown or had a bad value."""


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def parse(cls, where: str, **values: Any) -> Any:
        try:
            return cls(**values)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}" for err in e.errors()
            )
            raise OptionsError(f"invalid options for {where}: {problems}") from None

    def merged(self, where: str, **values: Any) -> Any:
        return self.parse(where, **{**self.model_dump(exclude_unset=True), **values})


class _PlacedOptions(_Options):
    """Options of what runs on a node: where it may run."""

    scheduling_strategy: NodeAffinitySchedulingStrategy | Literal["DEFAULT", "SPREAD"] | None = None

    @property
    def node_id(self) -> str:
        """The node it must run on, or "" for any."""
        strategy = self.scheduling_strategy
        return strategy.node_id if isinstance(strategy, NodeAffinitySchedulingStrategy) else ""


class ActorOptions(_PlacedOptions):
    name: str | None = None
    namespace: str | None = None
    lifetime: Literal["detached", "non_detached"] | None = None
    get_if_exists: bool = False
    max_restarts: int = Field(default=0, ge=-1)
    max_task_retries: int = Field(default=0, ge=-1)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_pending_calls: int = Field(default=-1, ge=-1)
    num_cpus: float = Field(default=0.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0, le=0)
    """Accepted for Ray compatibility; this cluster offers no GPUs, so only 0 is valid."""
    resources: dict[str, float] | None = None
    runtime_env: None = None

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("an actor name must not be empty")
        return value

    @field_validator("resources")
    @classmethod
    def _no_custom_resources(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError(f"custom resources are not offered by this cluster: {sorted(value)}")
        return value

    @property
    def detached(self) -> bool:
        return self.lifetime == "detached"


class CallOptions(_Options):
    num_returns: int = Field(default=1, ge=0)
    name: str | None = None
    max_task_retries: int | None = Field(default=None, ge=-1)
