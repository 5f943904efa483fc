"""The cluster YAML of `actorhub up`: Ray's cluster configuration, the fields a local cluster uses.

    cluster_name: demo
    max_workers: 2                    # worker nodes in all, the head not counted
    idle_timeout_minutes: 5           # fractions allowed (0.1: six seconds)
    upscaling_speed: 1.0              # nodes launched at once: max(5, speed x nodes)
    provider: {type: local}           # the only provider so far
    head_node_type: head
    available_node_types:
      head:   {resources: {CPU: 1}, min_workers: 0, max_workers: 0}
      worker: {resources: {CPU: 2, GPU: 1, x86: 1}, min_workers: 0, max_workers: 2,
               node_config: {object_store_memory: 100000000}}

A node type's `resources` are what its nodes declare (CPU, GPU, memory in bytes, custom names),
passed to the node agent as `--num-cpus/--num-gpus/--memory/--resources`; CPU defaults to this
machine's CPU count, as `actorhub start` does. `node_config` is the provider's: the local one
takes `object_store_memory` and `prestart_workers`. Anything else is refused by name, as is
every field of Ray's that only cloud providers use (auth, docker, setup commands...), so that a
file never half-applies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from actorhub.config import ConfigError
from actorhub.hub.resources import check_amount

__all__ = ["ClusterConfig", "LocalNodeConfig", "NodeTypeConfig", "ProviderConfig", "load_cluster_config"]

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)
# The checked config, as `actorhub up` leaves it in the session for the autoscaler.
CONFIG_FILE = "autoscaler.json"


class LocalNodeConfig(BaseModel):
    """`node_config` for the local provider."""

    model_config = _STRICT

    object_store_memory: int | None = Field(default=None, gt=0)
    prestart_workers: int | None = Field(default=None, ge=0)


class NodeTypeConfig(BaseModel):
    model_config = _STRICT

    resources: dict[str, float | int] = Field(default_factory=dict)
    min_workers: int = Field(default=0, ge=0)
    max_workers: int | None = Field(default=None, ge=0)
    """None: the cluster's max_workers."""
    node_config: LocalNodeConfig = Field(default_factory=LocalNodeConfig)

    @field_validator("resources")
    @classmethod
    def _amounts(cls, resources: dict[str, float | int]) -> dict[str, float | int]:
        for name, amount in resources.items():
            if not name.strip():
                raise ValueError("a resource name must not be empty")
            check_amount(name, amount)
        if not float(resources.get("GPU", 0)).is_integer():
            raise ValueError(f"GPU must be a whole number of GPUs, got {resources['GPU']!r}")
        if not float(resources.get("memory", 0)).is_integer():
            raise ValueError(f"memory is a number of bytes, got {resources['memory']!r}")
        return resources

    def vector(self) -> dict[str, float]:
        """Its nodes' resources, CPU included (this machine's CPU count when not given)."""
        vector = {name: float(amount) for name, amount in self.resources.items() if amount > 0}
        vector.setdefault("CPU", float(os.cpu_count() or 1))
        return vector

    def custom(self) -> dict[str, float]:
        return {n: float(a) for n, a in self.resources.items() if n not in ("CPU", "GPU", "memory") and a > 0}


class ProviderConfig(BaseModel):
    model_config = _STRICT

    type: Literal["local"] = "local"


class ClusterConfig(BaseModel):
    model_config = _STRICT

    cluster_name: str = Field(default="default", min_length=1)
    max_workers: int = Field(default=2, ge=0)
    upscaling_speed: float = Field(default=1.0, gt=0)
    idle_timeout_minutes: float = Field(default=5.0, ge=0)
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    available_node_types: dict[str, NodeTypeConfig] = Field(min_length=1)
    head_node_type: str

    @field_validator("cluster_name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"use letters, digits, '-', '_' and '.' only, got {name!r}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if self.head_node_type not in self.available_node_types:
            raise ValueError(f"head_node_type {self.head_node_type!r} is not one of available_node_types "
                             f"({', '.join(sorted(self.available_node_types))})")
        for name, node_type in self.available_node_types.items():
            if node_type.max_workers is not None and node_type.min_workers > node_type.max_workers:
                raise ValueError(f"available_node_types.{name}: min_workers ({node_type.min_workers}) is above "
                                 f"max_workers ({node_type.max_workers})")
        return self

    @property
    def idle_timeout_s(self) -> float:
        return self.idle_timeout_minutes * 60.0

    def max_of(self, node_type: str) -> int:
        """How many workers of `node_type` may run (the cluster's max_workers bounds them all too)."""
        own = self.available_node_types[node_type].max_workers
        return self.max_workers if own is None else min(own, self.max_workers)

    def worker_types(self) -> dict[str, NodeTypeConfig]:
        """The types workers may be launched as: every type, the head's too (its max_workers counts
        nodes beside the head, as in Ray)."""
        return dict(self.available_node_types)


def _problem(error: ErrorDetails) -> str:
    """"field.path: what is wrong"; a check of several fields names them in its message."""
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {_message(error)}" if where else _message(error)


def parse_cluster_config(data: object, source: str) -> ClusterConfig:
    """`data` (the YAML's document) as a ClusterConfig, or ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a cluster config must be a mapping of fields, not {type(data).__name__}")
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(_problem(err) for err in e.errors())
        raise ConfigError(f"{source}: invalid cluster config: {problems}") from None


def _message(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "not a field actorhub's local clusters know (refused rather than ignored)"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def load_cluster_config(path: Path) -> ClusterConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the cluster config {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_cluster_config(data, str(path))
