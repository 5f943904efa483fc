"""Typed options of remote functions."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationInfo, field_validator

from actorhub.api.options import Cpus, Int32Limit, NumReturnsOption, _PlacedOptions, checked_name
from actorhub.hub.resources import check_amount, check_custom


class TaskOptions(_PlacedOptions):
    """A task that may run anywhere runs on the caller's node first, then on the others."""

    # Bounds as for actors (api/options.py): a task runs as a call of an executor actor, so its
    # num_returns travels as Call.num_returns (uint32); max_retries is counted by the caller
    # and gets the int32 bound of an actor's max_task_retries.
    num_cpus: Cpus = 1.0
    # Checked as for actors, but only actors are given them so far: the lease desks lend CPUs.
    num_gpus: float = 0.0
    memory: float = 0.0
    resources: dict[str, float] | None = None
    num_returns: NumReturnsOption = 1
    max_retries: Int32Limit = 3
    retry_exceptions: bool | list[type[BaseException]] = False
    name: str | None = None

    @field_validator("num_gpus", "memory")
    @classmethod
    def _cpus_only_amount(cls, value: float, info: ValidationInfo) -> float:
        if check_amount(str(info.field_name), value) > 0:
            raise ValueError(f"tasks are given CPUs only so far: request {info.field_name} for an actor instead")
        return value

    @field_validator("resources")
    @classmethod
    def _cpus_only_resources(cls, value: Any) -> Any:
        if value is not None and check_custom(value):
            raise ValueError("tasks are given CPUs only so far: request custom resources for an actor instead")
        return value

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
