"""Applying a runtime_env in the worker that runs it, before its class is unpickled.

A worker hosts one actor (or task executor) for its whole life, so the env is applied to the
process once: env_vars into os.environ, py_modules' unpacked roots onto sys.path, and the
working_dir as the cwd and the first sys.path entry. Packages are already unpacked by the node
agent (`node_cache`); pip packages are importable because the worker was forked from a zygote
started in the env's virtual environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from actorhub.runtime_env.context import set_process_env
from actorhub.runtime_env.node_cache import package_dir
from actorhub.runtime_env.spec import RuntimeEnvSpec

if TYPE_CHECKING:
    from actorhub.runtime.runtime import Runtime


def apply_in_worker(runtime: Runtime, env_json: str, session_dir: Path) -> None:
    env = RuntimeEnvSpec.from_json(env_json)
    if env is None:
        return
    os.environ.update(env.env_vars)
    for uri in reversed(env.py_modules):
        sys.path.insert(0, str(package_dir(session_dir, uri)))
    if env.working_dir is not None:
        directory = package_dir(session_dir, env.working_dir)
        os.chdir(directory)
        sys.path.insert(0, str(directory))
    # What this actor (or a task here) creates inherits its env.
    set_process_env(runtime, env)
