"""Configuration: one frozen model, read at the process edge and passed explicitly.

Values come from explicit arguments first, then ``ACTORHUB_*`` environment variables, then
the defaults below. Nothing deeper in the code reads the environment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actorhub.exceptions import ActorHubError

ENV_PREFIX = "ACTORHUB_"


class ConfigError(ActorHubError, ValueError):
    """A configuration value is invalid; the message names the field."""


def default_session_root() -> Path:
    return Path(tempfile.gettempdir()) / f"actorhub-{os.getuid()}"


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    session_root: Path = Field(default_factory=default_session_root)
    """Where session directories are made; `latest` in it names the newest session."""
    bind_host: str = "127.0.0.1"
    """Local clusters listen on loopback only."""
    num_cpus: float | None = Field(default=None, ge=0)
    """CPUs a node offers; None: os.cpu_count()."""
    prestart_workers: int = Field(default=2, ge=0)
    """Idle workers a node keeps forked and ready, so actor creation does not wait for a fork."""
    logging_level: str = "WARNING"
    hub_port: int = Field(default=0, ge=0, le=65535)
    """0: pick a free port."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """How long init() waits for the cluster to come up or answer."""
    kill_grace_s: float = Field(default=5.0, gt=0)
    object_store_memory: int | None = Field(default=None, gt=0)
    """Bytes of shared memory a node's object store may use; None: 30% of the machine's memory."""
    lost_result_grace_s: float = Field(default=10.0, gt=0)
    """How long after a callee that stored a result dies its caller is asked whether the reply
    naming it arrived; a result it never learned of is then freed."""
    tracing_startup_hook: str | None = None
    """"module:function" run at the start of every worker to set OpenTelemetry tracing up."""
    token: str | None = None
    """The cluster token, for joining a hub by HOST:PORT from a machine without its session."""

    @classmethod
    def load(cls, **overrides: Any) -> Config:
        """Arguments first (None means "not given"), then ACTORHUB_* variables, then defaults."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env = os.environ.get(ENV_PREFIX + name.upper())
            if env is not None and env != "":
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(f"invalid actorhub configuration: {e}") from None
