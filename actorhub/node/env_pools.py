"""A node's worker pools, one per pip environment, and the runtime_envs they run.

Workers of the base environment come from the node's own zygote (`pool`). A runtime_env with
`pip` runs in workers forked from a zygote started inside that env's virtual environment
(`runtime_env/node_cache.py`), one zygote and one `WorkerPool` per distinct pip env, started
on its first use and kept for the node's life; those pools prestart no workers. Envs without
pip (env_vars, working_dir, py_modules) use base workers: a worker hosts one actor for its
whole life and applies its env itself, so no two envs ever share a process.

Used on the node agent's event loop; the lookups (`find_actor`, `hosted`, `counts`) may also
run on its other threads, which only read a snapshot of the pools.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from actorhub.config import Config
from actorhub.node import zygote
from actorhub.node.worker_pool import WorkerPool
from actorhub.node.workers import Counts, Worker
from actorhub.runtime_env.node_cache import RuntimeEnvCache, venv_python
from actorhub.runtime_env.spec import RuntimeEnvSpec
from actorhub.wire.records import HostedActor


class NodeWorkerPools:
    def __init__(
        self, zygote_process: zygote.ZygoteProcess, spawn_zygote: Callable[[], zygote.ZygoteProcess], *,
        node_id: str, session_dir: Path, hub_address: str, config: Config,
        on_actor_exit: Callable[[Worker], None], fetch_package: Callable[[str], bytes],
    ) -> None:
        self._node_id = node_id
        self._session_dir = session_dir
        self._logs = session_dir / "logs"
        self._hub_address = hub_address
        self._bind_host = config.bind_host
        self._connect_timeout_s = config.connect_timeout_s
        self._on_actor_exit = on_actor_exit
        self.base = WorkerPool(
            node_id=node_id, logs_dir=str(self._logs), prestart=config.prestart_workers,
            connect_timeout_s=config.connect_timeout_s, zygote=zygote_process, spawn_zygote=spawn_zygote,
            on_actor_exit=on_actor_exit,
        )
        self._by_pip_env: dict[str, WorkerPool] = {}
        self._node_address = ""
        self._stopping = False
        self.runtime_envs = RuntimeEnvCache(session_dir, self._logs, node_id, fetch_package)

    def start(self, node_address: str) -> None:
        self._node_address = node_address
        self.base.start(node_address)

    def all(self) -> list[WorkerPool]:
        return [self.base, *list(self._by_pip_env.values())]

    async def for_env(self, env_json: str) -> WorkerPool:
        """The pool whose workers can run `env_json` (the ActorSpec's field), once everything
        it needs is ready on this node. Raises RuntimeEnvSetupError."""
        env = RuntimeEnvSpec.from_json(env_json)
        if env is None:
            return self.base
        await self.runtime_envs.prepare(env)
        if not env.pip:
            return self.base
        pool = self._by_pip_env.get(env.pip_key)
        if pool is None:
            # No await since the lookup: concurrent first uses on the loop make one pool.
            pool = self._by_pip_env[env.pip_key] = self._env_pool(env.pip_key)
        return pool

    def _env_pool(self, pip_key: str) -> WorkerPool:
        spawn = partial(
            zygote.spawn, session_dir=self._session_dir, hub_address=self._hub_address, bind_host=self._bind_host,
            log_path=self._logs / f"zygote-{self._node_id}-{pip_key}.log",
            python=str(venv_python(self._session_dir, pip_key)),
        )
        pool = WorkerPool(
            node_id=self._node_id, logs_dir=str(self._logs), prestart=0,
            connect_timeout_s=self._connect_timeout_s, zygote=spawn(), spawn_zygote=spawn,
            on_actor_exit=self._on_actor_exit,
        )
        pool.start(self._node_address)
        return pool

    def register(self, worker_id: str, address: str, pid: int) -> bool:
        return any(pool.register(worker_id, address, pid) for pool in self.all())

    def find_actor(self, actor_id: str, incarnation: int) -> tuple[WorkerPool, Worker] | None:
        for pool in self.all():
            worker = pool.find_actor(actor_id, incarnation)
            if worker is not None:
                return pool, worker
        return None

    def hosted(self) -> list[HostedActor]:
        return [actor for pool in self.all() for actor in pool.hosted()]

    def counts(self) -> Counts:
        total = Counts()
        for pool in self.all():
            counts = pool.counts()
            total.idle += counts.idle
            total.actors += counts.actors
            total.cpus_in_use += counts.cpus_in_use
        return total

    def shutdown(self, grace_s: float) -> None:
        for pool in self.all():
            pool.shutdown(grace_s)
