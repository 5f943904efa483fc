"""LeaseDesk: one actor per node that lends task executors, each for one task's resources.

A lease is an actor call (`lease`), and so is its return (`release`). A caller keeps a lease
for its following tasks while it has work. A task blocked in get() gives its CPU back until it
resumes, so a task waiting on subtasks never starves them. Leases of a caller that died are
reclaimed: the desk pings lease holders it has not heard from.

Tasks and actors that reserve CPUs (`num_cpus=`) share the node's CPUs as in Ray, by a
two-way report: whenever what the desk lends changes (and every second), it tells the hub,
which places such actors only in what is left; the reply says what actors reserve on the node
and what pending actors wait for there, and the desk lends neither. So an actor that waits for
the node's tasks to end gets their CPUs as they do, instead of new tasks taking them.

A task may ask for more than CPUs: GPUs, memory, custom resources (its shape). Those the desk
claims from the hub for each such lease before lending it (hub/task_loans.py): the hub is
the one allocator of them, so a GPU never serves an actor and a task at once, and it picks the
GPU ids, which go back to the submitter with the executor and into the task's
CUDA_VISIBLE_DEVICES. A claim the hub refuses (not free, a pending actor waits for it, or the
node has no such resource yet: a placement group may add it) waits, and is tried again
whenever a lease comes back or a second passed. Reports say what is lent in all, so the hub's
count heals from any lost reply.

Executors run in a runtime_env: a lease names the resolved env of its tasks ("" for none),
and only an executor created with that env serves it, so tasks of different envs never share a
process. Idle executors are kept per env; those of envs other than none are made on first use,
and once more than the node's CPUs' worth of them idle, the surplus is retired (killed), those
of the envs the desk saw first going first.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

from actorhub.exceptions import TaskPlacementGroupRemoved
from actorhub.hub.bundle_gpus import bundle_gpu_request
from actorhub.hub.bundles import group_of
from actorhub.namespaces import SYSTEM_NAMESPACE
from actorhub.tasks.removed_group_leases import RemovedGroupLeases
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from actorhub.wire.hub import CpuShare
from actorhub.wire.worker import WorkerClient

_HOLDER_CHECK_S = 1.0
# A lease's claim of resources besides CPUs, as the hub granted it: (what, the GPU ids, and the
# bundle they are of when it asks for a placement group's GPUs, else -1).
Claimed = tuple[dict[str, float], list[int], int]


def desk_name(node_id: str) -> str:
    return f"lease-desk-{node_id}"


def _bundle_gpus(need: dict[str, float]) -> tuple[str, float] | None:
    """(group, GPUs) when a claim asks for GPUs of a placement group's bundle."""
    named = group_of(list(need)) if any(name.startswith("GPU_group_") for name in need) else None
    amount = bundle_gpu_request(named[0], need) if named is not None else 0.0
    return (named[0], amount) if named is not None and amount > 0 else None


class LeaseDesk:
    def __init__(self, node_id: str, num_cpus: float) -> None:
        self._node_id = node_id
        self._total = num_cpus
        self._free = num_cpus
        # CPUs actors reserve on this node, and pending ones wait for here, by the hub's count.
        self._reserved = 0.0
        self._wanted = 0.0
        self._reporting = False  # a report to the hub is on its way
        self._report_again = False  # and what it reports changed since it left
        self._hub_turn = asyncio.Lock()  # one report (or claim) to the hub at a time: each is absolute
        # Besides CPUs: what leases hold in all (by the hub's grants), which GPUs and how much
        # of each, per lease; and the leases waiting for the hub to grant theirs.
        self._lent_vector: dict[str, float] = {}
        self._lent_gpus: dict[int, float] = {}
        # GPUs of placement groups' bundles, apart: (group, bundle, GPU id) -> how much.
        self._lent_bundle_gpus: dict[tuple[str, int, int], float] = {}
        self._vectors: dict[str, Claimed] = {}  # executor id -> its claim
        self._group_leases = RemovedGroupLeases()  # leases of removed placement groups: killed
        self._claim_waiters: list[asyncio.Future[None]] = []
        self._claiming = 0  # leases waiting for the hub to grant their resources
        self._returned = 0  # claimed resources given back, counted: a refusal may be out of date
        self._node_resources: dict[str, float] = {}  # the node's totals besides CPUs, by the hub
        self._idle: dict[str, list[Any]] = {"": []}  # by the executors' runtime_env
        self._handles: dict[str, Any] = {}
        self._env_of: dict[str, str] = {}  # executor id -> its runtime_env
        self._leased: dict[str, tuple[float, str]] = {}  # executor id -> (cpus, holder address)
        self._blocked: set[str] = set()
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._queued = 0  # lease requests that had to wait, since the desk started
        self._watcher: asyncio.Task[None] | None = None
        from actorhub.metrics import worker_metrics  # in the desk's worker only (preloaded there)

        worker_metrics.watch_lease_desk(self._usage)
        for _ in range(max(1, math.ceil(num_cpus))):
            self._idle[""].append(self._new_executor())
        self._apply_actor_share(self._report(0.0))

    def _usage(self) -> dict[str, float]:
        """For the node's metrics, read from the publisher's thread: plain numbers, no iteration."""
        return {"total": self._total, "free": self._free, "waiting": len(self._waiters)}

    def _new_executor(self) -> Any:
        handle = self._create_executor()
        self._handles[handle.actor_id] = handle
        self._env_of[handle.actor_id] = ""
        return handle

    def _create_executor(self, runtime_env: str = "") -> Any:
        """A new executor on this node (CreateActor: the hub must be there); off the loop once
        the desk serves, where a hub that is away must not stall every lease and release."""
        from actorhub.api.actor_class import ActorClass, create_actor
        from actorhub.api.options import ActorOptions
        from actorhub.runtime_env.spec import RuntimeEnvSpec
        from actorhub.tasks.executor import TaskExecutor

        executor_class = ActorClass(
            TaskExecutor,
            ActorOptions.for_system(
                namespace=SYSTEM_NAMESPACE,
                lifetime="detached",
                max_restarts=-1,  # a task that kills its worker gets a fresh one on the same lease
                max_concurrency=4,  # room for cancel() while a task runs
                scheduling_strategy=NodeAffinitySchedulingStrategy(self._node_id),
                runtime_env=RuntimeEnvSpec.from_json(runtime_env),  # resolved by the submitter
            ),
        )
        from actorhub.runtime.runtime import current

        return create_actor(current(), executor_class, desk_name(self._node_id), SYSTEM_NAMESPACE)

    async def lease(self, num_cpus: float, holder: str, runtime_env: str = "",
                    resources: dict[str, float] | None = None) -> Any:
        """An executor lent for `num_cpus` (and `resources`, whose lease answers (executor, the
        GPU ids the hub gave it)) until `release`."""
        if num_cpus > self._total:
            raise ValueError(f"a task needs {num_cpus} CPUs but node {self._node_id} has {self._total}")
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_holders())
        claimed = await self._claim(resources) if resources else None
        try:
            executor = await self._lend(num_cpus, holder, runtime_env)
        except BaseException:
            if claimed is not None:
                self._unclaim(*claimed)
            raise
        if claimed is None:
            return executor
        self._vectors[executor.actor_id] = claimed
        return executor, claimed[1]

    async def _lend(self, num_cpus: float, holder: str, runtime_env: str) -> Any:
        if self._waiters or self._free < num_cpus:
            self._queued += 1
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((num_cpus, granted))
            await granted
        else:
            self._free -= num_cpus
        idle = self._idle.get(runtime_env)
        if idle:
            executor = idle.pop()
        else:
            loop = asyncio.get_running_loop()
            try:
                executor = await loop.run_in_executor(None, self._create_executor, runtime_env)
            except BaseException:
                # No executor (the hub is away, say): the CPUs go back, the caller gets the error.
                self._free += num_cpus
                self._grant()
                raise
            self._handles[executor.actor_id] = executor
            self._env_of[executor.actor_id] = runtime_env
        self._leased[executor.actor_id] = (num_cpus, holder)
        self._lent_changed()
        return executor

    async def release(self, executor_id: str, broken: bool = False) -> None:
        self._give_back(executor_id, broken)

    def _give_back(self, executor_id: str, broken: bool = False) -> None:
        """`broken`: its runtime_env failed to set up, so the executor died; it is forgotten, and
        the next lease of that env makes a new one, which tries the setup again."""
        lease = self._leased.pop(executor_id, None)
        if lease is None:
            return
        claimed = self._vectors.pop(executor_id, None)
        if claimed is not None:
            self._unclaim(*claimed)
            self._group_leases.lease_ended(executor_id)
        if executor_id in self._blocked:
            self._blocked.discard(executor_id)  # its CPU was already given back
        else:
            self._free += lease[0]
        if broken:
            del self._handles[executor_id], self._env_of[executor_id]
        else:
            self._idle.setdefault(self._env_of[executor_id], []).append(self._handles[executor_id])
            if self._env_of[executor_id]:
                self._retire_surplus()
        self._grant()
        self._lent_changed()

    async def block(self, executor_id: str) -> None:
        lease = self._leased.get(executor_id)
        if lease is not None and executor_id not in self._blocked:
            self._blocked.add(executor_id)
            self._free += lease[0]
            self._grant()
            self._lent_changed()

    async def unblock(self, executor_id: str) -> None:
        lease = self._leased.get(executor_id)
        if lease is not None and executor_id in self._blocked:
            self._blocked.discard(executor_id)
            # May go below zero for a while, as in Ray: the resumed task must not wait again.
            self._free -= lease[0]
            self._lent_changed()

    async def stats(self) -> dict[str, float]:
        return {
            "total": self._total, "free": self._free, "leased": len(self._leased),
            "idle": sum(len(idle) for idle in self._idle.values()),
            "reserved_by_actors": self._reserved, "wanted_by_actors": self._wanted,
            "waiting": len(self._waiters), "queued_total": self._queued,
            "waiting_for_resources": self._claiming,
            **{f"lent:{name}": amount for name, amount in self._lent_vector.items()},
            **{f"node:{name}": amount for name, amount in self._node_resources.items()},
        }

    # -- resources besides CPUs: claimed from the hub ------------------------------------------
    async def _claim(self, need: dict[str, float]) -> Claimed:
        """Wait until the hub lends `need` to this desk; (need, the GPU ids it picked, and the
        bundle they are of when `need` asks for a placement group's GPUs)."""
        self._claiming += 1
        try:
            return await self._claim_until_granted(need)
        finally:
            self._claiming -= 1

    async def _claim_until_granted(self, need: dict[str, float]) -> Claimed:
        loop = asyncio.get_running_loop()
        refused = False
        while True:
            async with self._hub_turn:
                returned, report = self._returned, self._report_args()
                share = await loop.run_in_executor(None, self._report, *report, need)
                if share is not None and share.claim_granted:
                    # Recorded before the turn ends: the next report must say it is lent.
                    ids = list(share.claim_gpu_ids)
                    for name, amount in need.items():
                        self._lent_vector[name] = self._lent_vector.get(name, 0.0) + amount
                    bundle = share.claim_bundle_index if _bundle_gpus(need) else -1
                    self._count_gpus(need, ids, bundle, 1)
            self._apply_actor_share(share)
            if share is not None and share.claim_granted:
                return need, ids, bundle
            group = await self._group_leases.claim_in_removed_group(need, self._node_resources)
            if group:
                raise TaskPlacementGroupRemoved(f"the task's placement group {group} was removed")
            if returned != self._returned:
                continue  # something came back while the hub answered: ask again at once
            if not refused:
                self._queued += 1
                refused = True
            woken: asyncio.Future[None] = loop.create_future()
            self._claim_waiters.append(woken)
            await woken

    def _unclaim(self, need: dict[str, float], gpu_ids: list[int], bundle: int = -1) -> None:
        """A lease gave back what it claimed: the next report tells the hub."""
        for name, amount in need.items():
            left = self._lent_vector.get(name, 0.0) - amount
            if left > 1e-9:
                self._lent_vector[name] = left
            else:
                self._lent_vector.pop(name, None)
        self._count_gpus(need, gpu_ids, bundle, -1)
        self._returned += 1
        self._wake_claims()
        self._lent_changed()

    def _count_gpus(self, need: dict[str, float], gpu_ids: list[int], bundle: int, sign: int) -> None:
        """Add (sign 1) or take away (-1) a claim's GPUs: the node's, or a bundle's (bundle >= 0)."""
        in_group = _bundle_gpus(need)
        gpu = in_group[1] if in_group is not None else need.get("GPU", 0.0)
        share = gpu if gpu < 1 else 1.0
        lent: dict[Any, float] = self._lent_bundle_gpus if in_group is not None else self._lent_gpus
        for i in gpu_ids:
            key: Any = (in_group[0], bundle, i) if in_group is not None else i
            left = lent.get(key, 0.0) + sign * share
            if left > 1e-9:
                lent[key] = left
            else:
                lent.pop(key, None)

    def _wake_claims(self) -> None:
        """Claims the hub refused try again: something may have come back."""
        waiters, self._claim_waiters = self._claim_waiters, []
        for woken in waiters:
            if not woken.done():
                woken.set_result(None)

    def _retire_surplus(self) -> None:
        """Kill idle executors of runtime_envs beyond the node's CPUs' worth: each env used once
        would otherwise keep its processes for the desk's whole life."""
        keep = max(1, math.ceil(self._total))
        idle_with_env = [(env, handle) for env, idle in self._idle.items() if env for handle in idle]
        for env, handle in idle_with_env[: max(0, len(idle_with_env) - keep)]:
            self._idle[env].remove(handle)
            if not self._idle[env]:
                del self._idle[env]
            del self._handles[handle.actor_id], self._env_of[handle.actor_id]
            asyncio.get_running_loop().run_in_executor(None, self._kill_executor, handle.actor_id)

    @staticmethod
    def _kill_executor(actor_id: str) -> None:
        from actorhub.runtime.runtime import current

        try:
            current().hub.kill_actor(actor_id, no_restart=True)
        except Exception:
            pass  # gone already, or the hub is away: it ends with the cluster

    def _lent(self) -> float:
        return sum(cpus for executor_id, (cpus, _) in self._leased.items() if executor_id not in self._blocked)

    def _report_args(self) -> tuple[float, dict[str, float], dict[int, float], dict[tuple[str, int, int], float]]:
        """On the desk's loop: what is lent now, copied for the report that leaves the loop."""
        return self._lent(), dict(self._lent_vector), dict(self._lent_gpus), dict(self._lent_bundle_gpus)

    def _report(self, lent: float, lent_vector: dict[str, float] | None = None,
                lent_gpus: dict[int, float] | None = None,
                lent_bundle_gpus: dict[tuple[str, int, int], float] | None = None,
                claim: dict[str, float] | None = None) -> CpuShare | None:
        """Tell the hub what is lent (and claim more); what actors reserve and want here, and
        whether the claim was granted (None: the hub cannot say)."""
        from actorhub.runtime.runtime import current

        try:
            return current().hub.report_lent_cpus(self._node_id, lent, lent_vector, lent_gpus, claim, lent_bundle_gpus)
        except Exception:
            return None

    def _apply_actor_share(self, share: CpuShare | None) -> None:
        """On the desk's loop: take what actors reserve or wait for out of what may be lent, or
        give back what they no longer do."""
        if share is None:
            return  # the last count stands
        reserved, wanted = share.reserved, share.wanted
        self._node_resources = dict(share.node_resources)
        if self._vectors:
            self._group_leases.check(self._vectors, self._node_resources)
        self._free -= (reserved + wanted) - (self._reserved + self._wanted)
        self._reserved, self._wanted = reserved, wanted
        self._grant()

    def _lent_changed(self) -> None:
        """On the desk's loop: report to the hub, one report at a time (a change while one is on
        its way sends one more), off the loop: the hub's answer may start an actor."""
        if self._reporting:
            self._report_again = True
            return
        self._reporting = True
        asyncio.get_running_loop().create_task(self._send_reports())

    async def _send_reports(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._report_again = False
                async with self._hub_turn:
                    share = await loop.run_in_executor(None, self._report, *self._report_args())
                self._apply_actor_share(share)
                if not self._report_again:
                    return
        finally:
            self._reporting = False

    def _grant(self) -> None:
        while self._waiters and self._free >= self._waiters[0][0]:
            cpus, granted = self._waiters.popleft()
            if granted.cancelled():
                continue
            self._free -= cpus
            granted.set_result(None)

    async def _watch_holders(self) -> None:
        from actorhub.runtime.runtime import current

        runtime = current()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_HOLDER_CHECK_S)
            self._lent_changed()  # also learns of actors placed or gone since
            self._wake_claims()  # and claims try again: actors may have freed what they wait for
            holders = {holder for _, holder in self._leased.values()}
            for holder in holders:
                holder_client = WorkerClient(runtime.channels, holder, runtime.deadlines, "lease holder")
                gone = await loop.run_in_executor(None, holder_client.is_gone)
                if gone:
                    for executor_id, (_, who) in list(self._leased.items()):
                        if who == holder:
                            self._give_back(executor_id)

