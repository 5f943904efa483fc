"""What a runtime_env says: parsed and checked where it is given, merged over its parent's.

A `RuntimeEnvSpec` is one of two forms. As given (`@remote(runtime_env=...)`, `.options()`,
`init()`), `working_dir` and `py_modules` may name local paths. Resolved (`context.resolve`),
every local path is replaced by the URI of a package uploaded to the hub
(`hub://_actorhub_pkg_<sha256>.zip`), so the spec means the same on every host; that form
travels in `ActorSpec.runtime_env` as canonical JSON and is what workers apply.

Merging follows Ray: a child's env (an actor's or task's) takes each field it sets from itself
and the others from its parent's (the job's, or the env of the actor or task that submits
it), except `env_vars`, which are merged key by key with the child's winning.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from actorhub.exceptions import OptionsError

PACKAGE_SCHEME = "hub://"
SUPPORTED_FIELDS = ("env_vars", "working_dir", "py_modules", "pip", "excludes")
# Ray's other fields, refused by name rather than as typos.
UNSUPPORTED_FIELDS = (
    "conda", "container", "image_uri", "uv", "java_jars", "nsight", "mpi", "py_executable",
    "worker_process_setup_hook", "config", "_inject_current_ray",
)
_PIP_KEYS = ("packages",)


class RuntimeEnvSpec(BaseModel):
    """One runtime_env; empty fields are unset. Frozen: options share it between copies."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    env_vars: dict[str, str] = {}
    working_dir: str | None = None
    """A local directory (as given) or a package URI (resolved)."""
    py_modules: tuple[str, ...] = ()
    """Local directories or .py files (as given), or package URIs (resolved)."""
    pip: tuple[str, ...] | None = None
    """Requirement strings; None: no pip environment of its own."""
    excludes: tuple[str, ...] = ()
    """Patterns left out of working_dir and py_modules packages; used only where they are made."""

    def as_dict(self) -> dict[str, Any]:
        """Ray's dict form, with only the fields that are set."""
        out: dict[str, Any] = {}
        if self.env_vars:
            out["env_vars"] = dict(self.env_vars)
        if self.working_dir is not None:
            out["working_dir"] = self.working_dir
        if self.py_modules:
            out["py_modules"] = list(self.py_modules)
        if self.pip is not None:
            out["pip"] = list(self.pip)
        if self.excludes:
            out["excludes"] = list(self.excludes)
        return out

    def to_json(self) -> str:
        """Canonical: equal envs give equal text, which keys caches and worker pools."""
        return self._json

    @cached_property
    def _json(self) -> str:
        # Made once per spec: a task submitted with an env looks its resolved form up by it.
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RuntimeEnvSpec | None:
        """The env of a wire field; "" is none. Only actorhub writes the field, so no checks."""
        if not text:
            return None
        values = json.loads(text)
        for field in ("py_modules", "pip", "excludes"):
            if field in values:
                values[field] = tuple(values[field])
        return cls.model_validate(values, strict=False)

    @property
    def is_resolved(self) -> bool:
        return all(uri.startswith(PACKAGE_SCHEME) for uri in self.package_uris(strict=False))

    def package_uris(self, *, strict: bool = True) -> list[str]:
        """The packages this env needs on a node: working_dir's first. Only for a resolved env
        (`strict`), where every entry is a URI."""
        found = ([self.working_dir] if self.working_dir is not None else []) + list(self.py_modules)
        if strict and not all(uri.startswith(PACKAGE_SCHEME) for uri in found):
            raise ValueError("the runtime_env is not resolved: it still names local paths")
        return found

    @property
    def pip_key(self) -> str:
        """The pip environment's identity: a hash of the sorted requirements; "" without pip."""
        if not self.pip:
            return ""
        text = "\n".join(sorted(self.pip))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


class RuntimeEnv(dict[str, Any]):
    """Ray's `ray.runtime_env.RuntimeEnv`: a runtime_env as a dict, checked when it is made.

    `RuntimeEnv(pip=["tinydb"], env_vars={"A": "1"})` is accepted wherever the dict would be.
    """

    def __init__(self, **fields: Any) -> None:
        given = {name: value for name, value in fields.items() if value is not None}
        try:
            parse(given)
        except ValueError as e:
            raise OptionsError(f"invalid RuntimeEnv: {e}") from None
        super().__init__(given)


def parse(value: Any) -> RuntimeEnvSpec | None:
    """A user's runtime_env (a dict, or None) as a spec; None for none or an empty one.

    Raises ValueError naming the field and what is wrong with it (options turn it into
    OptionsError); local paths must exist here, at the caller, where they are read.
    """
    if value is None:
        return None
    if isinstance(value, RuntimeEnvSpec):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"runtime_env must be a dict, not {type(value).__name__}")
    for field in value:
        if field in UNSUPPORTED_FIELDS:
            raise ValueError(f"the runtime_env field {field!r} is not supported by actorhub "
                             f"(supported: {', '.join(SUPPORTED_FIELDS)})")
        if field not in SUPPORTED_FIELDS:
            raise ValueError(f"unknown runtime_env field {field!r} (supported: {', '.join(SUPPORTED_FIELDS)})")
    values: dict[str, Any] = {}
    if value.get("env_vars") is not None:
        values["env_vars"] = _env_vars(value["env_vars"])
    if value.get("working_dir") is not None:
        values["working_dir"] = _working_dir(value["working_dir"])
    if value.get("py_modules") is not None:
        values["py_modules"] = _py_modules(value["py_modules"])
    if value.get("pip") is not None:
        values["pip"] = _pip(value["pip"])
    if value.get("excludes") is not None:
        values["excludes"] = _strings(value["excludes"], "excludes")
    spec = RuntimeEnvSpec(**values)
    return spec if spec.as_dict() else None


def merge(parent: RuntimeEnvSpec | None, child: RuntimeEnvSpec | None) -> RuntimeEnvSpec | None:
    """`child` over `parent`, as Ray merges an actor's or task's env over the job's."""
    if child is None:
        return parent
    if parent is None:
        return child
    merged = parent.as_dict()
    mine = child.as_dict()
    env_vars = {**parent.env_vars, **child.env_vars}
    merged.update(mine)
    if env_vars:
        merged["env_vars"] = env_vars
    return RuntimeEnvSpec.from_json(json.dumps(merged))


def _env_vars(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"env_vars must be a dict of str to str, not {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"env_vars keys must be str, not {type(key).__name__} ({key!r})")
        if not isinstance(item, str):
            raise ValueError(f"env_vars[{key!r}] must be a str, not {type(item).__name__}")
        if not key or "=" in key or "\0" in key or "\0" in item:
            raise ValueError(f"env_vars[{key!r}] is not a usable environment variable")
    return dict(value)


def _local_path(value: Any, field: str) -> str:
    if not isinstance(value, str | os.PathLike):
        raise ValueError(f"{field} must be a str or path, not {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise ValueError(f"{field} must be a str or path, not bytes")
    return text


def _working_dir(value: Any) -> str:
    text = _local_path(value, "working_dir")
    if text.startswith(PACKAGE_SCHEME):
        return text
    if "://" in text:
        raise ValueError(f"working_dir {text!r}: only local directories (and {PACKAGE_SCHEME} packages) are supported")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError(f"working_dir {text!r} is not an existing directory")
    return str(path.resolve())


def _py_modules(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"py_modules must be a list of paths, not {type(value).__name__}")
    modules = []
    for item in value:
        text = _local_path(item, "py_modules entries")
        if text.startswith(PACKAGE_SCHEME):
            modules.append(text)
            continue
        path = Path(text).expanduser()
        if not (path.is_dir() or (path.is_file() and path.suffix == ".py")):
            raise ValueError(f"py_modules entry {text!r} is neither a directory nor a .py file")
        modules.append(str(path.resolve()))
    return tuple(modules)


def _pip(value: Any) -> tuple[str, ...]:
    """A list of requirements, a requirements file's path, or Ray's {"packages": ...}."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_PIP_KEYS))
        if unknown:
            raise ValueError(f"pip: the keys {unknown} are not supported (only {list(_PIP_KEYS)})")
        if "packages" not in value:
            raise ValueError("pip as a dict needs 'packages'")
        value = value["packages"]
    if isinstance(value, str | os.PathLike):
        path = Path(os.fspath(value)).expanduser()
        if not path.is_file():
            raise ValueError(f"pip requirements file {str(path)!r} does not exist")
        lines = [line.split(" #")[0].strip() for line in path.read_text().splitlines()]
        return tuple(line for line in lines if line and not line.startswith("#"))
    requirements = _strings(value, "pip")
    for item in requirements:
        if not item.strip() or item.strip().startswith("-"):
            raise ValueError(f"pip entry {item!r} is not a requirement (pip options are not accepted)")
    return tuple(item.strip() for item in requirements)


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{field} must be a list of str, not {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{field} entries must be str, not {type(item).__name__} ({item!r})")
    return tuple(value)
