"""A process's runtime_env, and the env of what it creates.

Every process has the env its work runs in: a driver the job's (`init(runtime_env=)`), a
worker its actor's or task executor's. An actor or task created here runs in that env with its
own merged over it (`spec.merge`), as in Ray; actorhub's own actors (lease desks) take none.

Before an env leaves the process it is resolved: each local working_dir and py_modules path is
packed (`packaging`) and uploaded to the hub unless the hub has it already, and replaced by the
package's URI. A process packs and uploads each distinct (path, excludes) once per runtime
(a driver that shuts down and joins another cluster uploads again); its resolved envs are
cached by their canonical JSON, so submitting a task costs a dict lookup. A directory is read
once: files changed after its first use in a runtime are not seen by that runtime.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from actorhub.exceptions import OptionsError
from actorhub.runtime_env import packaging
from actorhub.runtime_env.spec import PACKAGE_SCHEME, RuntimeEnvSpec, merge, parse

if TYPE_CHECKING:
    from actorhub.runtime.runtime import Runtime

_lock = threading.Lock()
# The env each runtime's work runs in (a process has one runtime at a time; a driver may init again).
_process_envs: weakref.WeakKeyDictionary[Runtime, RuntimeEnvSpec] = weakref.WeakKeyDictionary()


class _Resolved:
    """What one runtime resolved and uploaded: it lives and goes with the runtime."""

    def __init__(self) -> None:
        # (parent JSON, own JSON) -> the resolved env's JSON ("" for none).
        self.effective: dict[tuple[str, str], str] = {}
        # (what, local path, excludes) -> the URI of its package, uploaded to this runtime's hub.
        self.uploaded: dict[tuple[str, str, tuple[str, ...]], str] = {}


_resolved: weakref.WeakKeyDictionary[Runtime, _Resolved] = weakref.WeakKeyDictionary()


def _cache(runtime: Runtime) -> _Resolved:
    cache = _resolved.get(runtime)
    if cache is None:
        with _lock:
            cache = _resolved.setdefault(runtime, _Resolved())
    return cache


def set_process_env(runtime: Runtime, env: RuntimeEnvSpec | None) -> None:
    with _lock:
        if env is None:
            _process_envs.pop(runtime, None)
        else:
            _process_envs[runtime] = env


def process_env(runtime: Runtime) -> RuntimeEnvSpec | None:
    """The env the code of this process runs in; None for none."""
    return _process_envs.get(runtime)


def start_job_env(runtime: Runtime, env: RuntimeEnvSpec | None) -> None:
    """A driver's `init(runtime_env=...)` (`checked` already): its packages uploaded, and made
    the env that this job's actors and tasks inherit."""
    set_process_env(runtime, resolve(runtime, env) if env is not None else None)


def checked(value: object, where: str) -> RuntimeEnvSpec | None:
    """`spec.parse` with its ValueError as an OptionsError naming `where`."""
    try:
        return parse(value)
    except ValueError as e:
        raise OptionsError(f"invalid options for {where}: runtime_env: {e}") from None


def effective_env(runtime: Runtime, own: RuntimeEnvSpec | None) -> str:
    """The resolved env, as wire JSON, of an actor or task created here with `own` ("" for none)."""
    parent = _process_envs.get(runtime)
    if own is None and parent is None:
        return ""
    cache = _cache(runtime)
    key = (parent.to_json() if parent is not None else "", own.to_json() if own is not None else "")
    found = cache.effective.get(key)
    if found is None:
        merged = merge(parent, own)
        found = cache.effective[key] = resolve(runtime, merged).to_json() if merged is not None else ""
    return found


def resolve(runtime: Runtime, env: RuntimeEnvSpec) -> RuntimeEnvSpec:
    """`env` with each local path replaced by its uploaded package's URI."""
    if env.is_resolved and not env.excludes:
        return env
    working_dir = env.working_dir
    if working_dir is not None and not working_dir.startswith(PACKAGE_SCHEME):
        working_dir = _upload(runtime, "working_dir", working_dir, env.excludes)
    modules = tuple(
        path if path.startswith(PACKAGE_SCHEME) else _upload(runtime, "py_modules", path, env.excludes)
        for path in env.py_modules
    )
    # excludes have done their work: leaving them in would make equal envs look different.
    return RuntimeEnvSpec(env_vars=env.env_vars, working_dir=working_dir, py_modules=modules, pip=env.pip)


def _upload(runtime: Runtime, what: str, path: str, excludes: tuple[str, ...]) -> str:
    cache = _cache(runtime)
    key = (what, path, excludes)
    uri = cache.uploaded.get(key)
    if uri is not None:
        return uri
    from actorhub.wire.runtime_env import RuntimeEnvPackagesClient

    try:
        package = packaging.package_for(what, path, excludes)
    except (OSError, packaging.PackageTooLargeError) as e:
        raise OptionsError(f"runtime_env {what} {path!r} cannot be packed: {e}") from None
    client = RuntimeEnvPackagesClient(runtime.channels, runtime.hub_address, runtime.deadlines,
                                      runtime.max_message_bytes)
    if not client.exists(package.uri):
        client.upload(package.uri, package.data, f"the runtime_env package of {what} {path!r}")
    cache.uploaded[key] = package.uri
    return package.uri
