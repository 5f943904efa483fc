"""Typed options of remote functions."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import ValidationInfo, field_validator, model_validator

from actorhub.api.options import Cpus, Int32Limit, NumReturnsOption, _PlacedOptions, checked_name
from actorhub.hub.resources import check_amount, check_custom
from actorhub.tasks.lease_shapes import Shape, shape_of
from actorhub.util.placement_group import task_values_in_group
from actorhub.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class TaskOptions(_PlacedOptions):
    """A task that may run anywhere runs on the caller's node first, then on the others."""

    # Bounds as for actors (api/options.py): a task runs as a call of an executor actor, so its
    # num_returns travels as Call.num_returns (uint32); max_retries is counted by the caller
    # and gets the int32 bound of an actor's max_task_retries.
    num_cpus: Cpus = 1.0
    # Ray's rules, as for actors (hub/resources.py): a fraction below 1 shares a GPU, more is whole.
    num_gpus: float = 0.0
    memory: float = 0.0  # bytes
    resources: dict[str, float] | None = None
    num_returns: NumReturnsOption = 1
    max_retries: Int32Limit = 3
    retry_exceptions: bool | list[type[BaseException]] = False
    name: str | None = None

    @cached_property
    def shape(self) -> Shape:
        """What it asks for besides CPUs, its lease pool's key: () for CPU-only tasks. Read per
        task: cached in the instance, a plain attribute read after the first (pydantic's private
        attributes cost a __getattr__ call each)."""
        if not (self.num_gpus or self.memory or self.resources):
            return ()
        vector = dict(self.resources or {})
        vector["GPU"], vector["memory"] = self.num_gpus, self.memory
        return shape_of(vector)

    @model_validator(mode="before")
    @classmethod
    def _in_placement_group(cls, values: Any) -> Any:
        # A placement group's task asks for its bundle's resource names instead (hub/bundles.py).
        if isinstance(values, dict) and isinstance(values.get("scheduling_strategy"), PlacementGroupSchedulingStrategy):
            return task_values_in_group(values)
        return values

    @field_validator("num_gpus", "memory")
    @classmethod
    def _usable_amount(cls, value: float, info: ValidationInfo) -> float:
        return check_amount(str(info.field_name), value)

    @field_validator("resources")
    @classmethod
    def _usable_resources(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return None if value is None else check_custom(value)

    @field_validator("name")
    @classmethod
    def _usable_name(cls, value: str | None) -> str | None:
        # The name travels in error messages and trace spans, protobuf strings.
        return None if value is None else checked_name(value, "task name")

    @field_validator("retry_exceptions")
    @classmethod
    def _exception_types(cls, value: bool | list[type[BaseException]]) -> bool | list[type[BaseException]]:
        if isinstance(value, list):
            for item in value:
                if not (isinstance(item, type) and issubclass(item, BaseException)):
                    raise ValueError(f"retry_exceptions must list exception classes, not {item!r}")
        return value

    def retries_exception(self, error: BaseException | None) -> bool:
        """Whether an application error should be retried under these options."""
        if self.retry_exceptions is True:
            return True
        if not self.retry_exceptions or error is None:
            return False
        return isinstance(error, tuple(self.retry_exceptions))
