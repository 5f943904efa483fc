"""Typed options of remote functions."""

from __future__ import annotations

from pydantic import Field, field_validator

from actorhub.api.options import _PlacedOptions


class TaskOptions(_PlacedOptions):
    """A task that may run anywhere runs on the caller's node first, then on the others."""

    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0, le=0)
    """Accepted for Ray compatibility; this cluster offers no GPUs, so only 0 is valid."""
    num_returns: int = Field(default=1, ge=0)
    max_retries: int = Field(default=3, ge=-1)
    retry_exceptions: bool | list[type[BaseException]] = False
    name: str | None = None
    runtime_env: None = None

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
