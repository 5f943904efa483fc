"""The environment a job's entrypoint runs in, from the job's runtime_env.

The entrypoint is a driver on the head: its packages are unpacked and its pip environment is
built in the session's runtime_env cache (`runtime_env/node_cache.py`, the same directories the
head's node agent uses, so its actors' workers reuse them), its working_dir is its cwd, its
env_vars are in its environment, and a pip environment's `bin/` leads its PATH (so `python` is
that environment's interpreter). It reaches the cluster by itself: ACTORHUB_ADDRESS names the
hub, whose session holds the token, and ACTORHUB_JOB_RUNTIME_ENV hands the job's runtime_env to
its `init()`, which makes it the env its actors and tasks inherit, as Ray does with a job's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from actorhub.job_submission.driver_link import SUBMISSION_ID_VARIABLE
from actorhub.runtime_env.node_cache import RuntimeEnvCache, package_dir, venv_dir
from actorhub.runtime_env.spec import PACKAGE_SCHEME, RuntimeEnvSpec, parse

ADDRESS_VARIABLE = "ACTORHUB_ADDRESS"
RUNTIME_ENV_VARIABLE = "ACTORHUB_JOB_RUNTIME_ENV"


class RuntimeEnvRequestError(ValueError):
    """A job's runtime_env that cannot be used; the message says why."""


@dataclass(frozen=True)
class EntrypointEnv:
    environ: dict[str, str]
    cwd: str | None


def check_request_env(value: object) -> RuntimeEnvSpec | None:
    """The runtime_env of a submission: Ray's fields, checked, with its packages already
    uploaded (the client packs a local working_dir or py_modules and sends its URI, as Ray's
    does): a local path means nothing on the head."""
    try:
        spec = parse(value)
    except ValueError as e:
        raise RuntimeEnvRequestError(f"runtime_env: {e}") from None
    if spec is None:
        return None
    for what, path in [("working_dir", spec.working_dir), *(("py_modules", p) for p in spec.py_modules)]:
        if path is not None and not path.startswith(PACKAGE_SCHEME):
            raise RuntimeEnvRequestError(
                f"runtime_env: {what} {path!r} is a local path; upload it first (JobSubmissionClient does) and "
                f"pass its {PACKAGE_SCHEME} URI")
    return spec


class EntrypointEnvs:
    """Prepares the environments of entrypoints; used on the dashboard's event loop."""

    def __init__(self, session_dir: Path, hub_address: str, fetch: Callable[[str], bytes]) -> None:
        self._session_dir = session_dir
        self._hub_address = hub_address
        self._cache = RuntimeEnvCache(session_dir, session_dir / "logs", "head (job entrypoints)", fetch)

    async def prepare(self, spec: RuntimeEnvSpec | None, submission_id: str, base: Mapping[str, str]) -> EntrypointEnv:
        """Raises RuntimeEnvSetupError (a fetch or pip install that failed) saying why."""
        environ = dict(base)
        environ[ADDRESS_VARIABLE] = self._hub_address
        environ[SUBMISSION_ID_VARIABLE] = submission_id
        # Lines reach the log (and `tail_job_logs`) as they are printed, not when a buffer fills.
        environ.setdefault("PYTHONUNBUFFERED", "1")
        environ.pop(RUNTIME_ENV_VARIABLE, None)
        # `python` in an entrypoint is the cluster's own interpreter (its environment has actorhub).
        environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), environ.get("PATH", os.defpath)])
        if spec is None:
            return EntrypointEnv(environ, None)
        await self._cache.prepare(spec)
        environ.update(spec.env_vars)
        environ[RUNTIME_ENV_VARIABLE] = spec.to_json()
        if spec.pip:
            venv = venv_dir(self._session_dir, spec.pip_key)
            environ["VIRTUAL_ENV"] = str(venv)
            environ["PATH"] = os.pathsep.join([str(venv / "bin"), environ.get("PATH", os.defpath)])
        cwd = str(package_dir(self._session_dir, spec.working_dir)) if spec.working_dir is not None else None
        if spec.py_modules:
            roots = [str(package_dir(self._session_dir, uri)) for uri in spec.py_modules]
            environ["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [environ.get("PYTHONPATH")])])
        return EntrypointEnv(environ, cwd)
