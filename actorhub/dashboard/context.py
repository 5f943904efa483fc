"""What the dashboard's route modules share: the session, the cluster token, the job manager,
the hub's runtime_env packages and the cluster's state. Stored on the aiohttp application under `CONTEXT`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from actorhub.config import Config
from actorhub.dashboard.cluster_state import ClusterStateReader
from actorhub.dashboard.job_manager import JobManager
from actorhub.wire.runtime_env import RuntimeEnvPackagesClient

T = TypeVar("T")


@dataclass
class DashboardContext:
    session_dir: Path
    token: str
    hub_address: str
    config: Config
    jobs: JobManager
    packages: RuntimeEnvPackagesClient
    """The hub's package store: blocking gRPC calls, run on the loop's executor."""
    state: ClusterStateReader
    """Nodes, actors, tasks, objects and placement groups (`state_routes.py`): blocking too."""

    async def in_thread(self, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, call, *args)


CONTEXT: web.AppKey[DashboardContext] = web.AppKey("actorhub_dashboard", DashboardContext)


def context_of(request: web.Request) -> DashboardContext:
    return request.app[CONTEXT]
