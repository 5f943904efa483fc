"""Typed options of remote functions."""

from __future__ import annotations

from pydantic import field_validator

from actorhub.api.options import Cpus, Int32Limit, NoGpus, NumReturnsOption, _PlacedOptions, checked_name


class TaskOptions(_PlacedOptions):
    """A task that may run anywhere runs on the caller's node first, then on the others."""

    # Bounds as for actors (api/options.py): a task runs as a call of an executor actor, so its
    # num_returns travels as Call.num_returns (uint32); max_retries is counted by the caller
    # and gets the int32 bound of an actor's max_task_retries.
    num_cpus: Cpus = 1.0
    num_gpus: NoGpus = 0.0
    num_returns: NumReturnsOption = 1
    max_retries: Int32Limit = 3
    retry_exceptions: bool | list[type[BaseException]] = False
    name: str | None = None

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
