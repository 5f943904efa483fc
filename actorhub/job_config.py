"""JobConfig: a job's settings, given to `init(job_config=...)` as Ray's `ray.job_config.JobConfig`.

actorhub honours `runtime_env` (the job's default runtime_env, merged under `init(runtime_env=)`),
`ray_namespace` (when `init()` names none), `default_actor_lifetime` (for actors this driver
creates without a `lifetime` option) and `metadata` (kept on the object). `jvm_options` and
`code_search_path` exist for other languages and are reported as ignored by `init()`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from actorhub.exceptions import OptionsError

__all__ = ["JobConfig"]

ActorLifetime = Literal["detached", "non_detached"]
_LIFETIMES = ("detached", "non_detached")


class JobConfig:
    """The settings of one job (a driver and everything it starts)."""

    def __init__(
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        _client_job: bool = False,
        metadata: Mapping[str, str] | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
        _py_driver_sys_path: list[str] | None = None,
    ) -> None:
        self.jvm_options: list[str] = list(jvm_options or [])
        self.code_search_path: list[str] = list(code_search_path or [])
        self.runtime_env: dict[str, Any] = {}
        self.set_runtime_env(runtime_env)
        self.client_job = _client_job
        self.metadata: dict[str, str] = {}
        self.set_metadata_dict(metadata)
        self.ray_namespace: str | None = None
        self.set_ray_namespace(ray_namespace)
        self.default_actor_lifetime: ActorLifetime = "non_detached"
        self.set_default_actor_lifetime(default_actor_lifetime)
        self.py_driver_sys_path: list[str] = list(_py_driver_sys_path or [])

    def set_metadata(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not isinstance(value, str):
            raise OptionsError(f"JobConfig metadata: keys and values must be str, got {key!r}: {value!r}")
        self.metadata[key] = value

    def set_metadata_dict(self, metadata: Mapping[str, str] | None) -> None:
        if metadata is None:
            return
        if not isinstance(metadata, Mapping):
            raise OptionsError(f"JobConfig metadata must be a dict of str to str, not {type(metadata).__name__}")
        for key, value in metadata.items():
            self.set_metadata(key, value)

    def set_runtime_env(self, runtime_env: Mapping[str, Any] | None, validate: bool = False) -> None:
        """The job's default runtime_env (a dict); `validate` is accepted for Ray's signature."""
        if runtime_env is None:
            self.runtime_env = {}
            return
        if not isinstance(runtime_env, Mapping):
            raise OptionsError(f"JobConfig runtime_env must be a dict, not {type(runtime_env).__name__}")
        self.runtime_env = dict(runtime_env)

    def set_ray_namespace(self, ray_namespace: str | None) -> None:
        if ray_namespace is not None and not isinstance(ray_namespace, str):
            raise OptionsError(f"JobConfig ray_namespace must be a str, not {type(ray_namespace).__name__}")
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        if default_actor_lifetime not in _LIFETIMES:
            raise OptionsError(
                f"JobConfig default_actor_lifetime={default_actor_lifetime!r}: must be 'detached' or 'non_detached'"
            )
        self.default_actor_lifetime = "detached" if default_actor_lifetime == "detached" else "non_detached"

    def ignored_settings(self) -> list[str]:
        """The settings actorhub cannot honour (other languages), as `name=value` for init()'s warning."""
        ignored = []
        if self.jvm_options:
            ignored.append(f"job_config.jvm_options={self.jvm_options!r} (Python only)")
        if self.code_search_path:
            ignored.append(f"job_config.code_search_path={self.code_search_path!r} (Python only)")
        if self.py_driver_sys_path:
            ignored.append(f"job_config._py_driver_sys_path={self.py_driver_sys_path!r}")
        return ignored

    def to_json(self) -> dict[str, Any]:
        return {
            "jvm_options": self.jvm_options,
            "code_search_path": self.code_search_path,
            "runtime_env": self.runtime_env,
            "client_job": self.client_job,
            "metadata": self.metadata,
            "ray_namespace": self.ray_namespace,
            "default_actor_lifetime": self.default_actor_lifetime,
            "py_driver_sys_path": self.py_driver_sys_path,
        }

    @classmethod
    def from_json(cls, job_config_json: Mapping[str, Any] | str) -> JobConfig:
        data = json.loads(job_config_json) if isinstance(job_config_json, str) else dict(job_config_json)
        return cls(
            jvm_options=data.get("jvm_options"),
            code_search_path=data.get("code_search_path"),
            runtime_env=data.get("runtime_env"),
            _client_job=bool(data.get("client_job", False)),
            metadata=data.get("metadata"),
            ray_namespace=data.get("ray_namespace"),
            default_actor_lifetime=data.get("default_actor_lifetime") or "non_detached",
            _py_driver_sys_path=data.get("py_driver_sys_path"),
        )

    def __repr__(self) -> str:
        return f"JobConfig({self.to_json()!r})"
