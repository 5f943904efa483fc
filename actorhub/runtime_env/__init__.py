"""Runtime environments (Ray's `runtime_env`): env_vars, working_dir, py_modules and pip for a job,
an actor or a task. `spec` parses and merges them, `packaging` zips local directories into
content-addressed packages, `context` resolves a process's env and uploads its packages,
`node_cache` prepares packages and pip environments on a node, `worker_setup` applies an env
in the worker that runs it."""

from typing import Any

__all__ = ["RuntimeEnv"]


def __getattr__(name: str) -> Any:
    # Lazily: package __init__ files stay import-free (the zygote imports before it forks).
    if name == "RuntimeEnv":
        from actorhub.runtime_env.spec import RuntimeEnv

        return RuntimeEnv
    raise AttributeError(f"module 'actorhub.runtime_env' has no attribute {name!r}")
