"""`actorhub microbenchmark`: Ray's actor-call microbenchmarks, run on actorhub.

The workloads and metric names are those of `ray microbenchmark` (Ray's
`python/ray/_private/ray_perf.py`), so a line here compares with the same line of Ray's output.
Each metric is measured the way Ray's `timeit` does it: a warm-up run sizes a step (a tenth of
the warm-up's call count, plus one), then four timed trials each run whole steps until their
time is up and count `calls * multiplier / elapsed`; the line shows the mean and the population
standard deviation of the trials. The durations are shorter than Ray's (10 s pause, 1 s
warm-up, 4 trials of 2 s) so the whole run fits in about two minutes on two cores; `scale`
multiplies them all.

"n:n actor calls async" has four caller actors where Ray has four tasks. Three metrics are our
own: "actor creations per second", "init to first actor call (s)" and "get of a 100 MB numpy
array (ms)". Task and object metrics live in microbenchmark_tasks; the measuring in bench_timing.

The actor classes live here, at module level, so workers import them by reference.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import actorhub
from actorhub.api.actor_class import ActorClass
from actorhub.api.actor_handle import ActorHandle
from actorhub.cli.bench_timing import BATCH, BenchmarkError, Result, Timing, timeit

__all__ = ["Result", "Timing", "main", "timeit"]

# Ray's sizes: 1000 calls per batch (timing.BATCH), 5000 per caller for the fan-out metrics,
# 4 callers for n:n.
FAN_OUT_CALLS = 5000
CALLERS = 4
# Ours: enough actors per round that the round's fixed costs do not dominate.
CREATION_BATCH = 10
INIT_RUNS = 3
INIT_RUN_TIMEOUT_S = 120.0


class Actor:
    def small_value(self) -> bytes:
        return b"ok"


class AsyncActor:
    async def small_value(self) -> bytes:
        return b"ok"


class Client:
    """Calls other actors from inside the cluster (Ray's `Client`, and its `work` task)."""

    def __init__(self, servers: ActorHandle[Any] | list[ActorHandle[Any]]) -> None:
        self.servers = servers if isinstance(servers, list) else [servers]

    def small_value_batch(self, n: int) -> None:
        """n calls to each server, all in flight at once."""
        refs = [s.small_value.remote() for s in self.servers for _ in range(n)]
        actorhub.get(refs)

    def spread_batch(self, n: int) -> None:
        """n calls in all, spread over the servers in turn."""
        servers = self.servers
        actorhub.get([servers[i % len(servers)].small_value.remote() for i in range(n)])


# Made remote by a call, not a decorator: mypy keeps a decorated class's own type, and the plain
# classes at module level let workers import them by reference.
RemoteActor: ActorClass[Actor] = actorhub.remote(num_cpus=0)(Actor)
RemoteAsyncActor: ActorClass[AsyncActor] = actorhub.remote(num_cpus=0)(AsyncActor)
RemoteClient: ActorClass[Client] = actorhub.remote(num_cpus=0)(Client)


# ---- the metrics ---------------------------------------------------------------------------

Handles = list[ActorHandle[Any]]


def _half_the_cpus() -> int:
    # Ray sizes its fan-out by multiprocessing.cpu_count() // 2; at least one server here.
    return max(1, (os.cpu_count() or 2) // 2)


def _actor_sync(timing: Timing, actors: Handles) -> Result:
    a = RemoteActor.remote()
    actors.append(a)
    return timeit("1:1 actor calls sync", lambda: actorhub.get(a.small_value.remote()), 1, timing)


def _actor_async(timing: Timing, actors: Handles) -> Result:
    a = RemoteActor.remote()
    actors.append(a)
    return timeit(
        "1:1 actor calls async", lambda: actorhub.get([a.small_value.remote() for _ in range(BATCH)]), BATCH, timing
    )


def _actor_concurrent(timing: Timing, actors: Handles) -> Result:
    a = RemoteActor.options(max_concurrency=16).remote()
    actors.append(a)
    return timeit(
        "1:1 actor calls concurrent",
        lambda: actorhub.get([a.small_value.remote() for _ in range(BATCH)]),
        BATCH,
        timing,
    )


def _one_to_n(timing: Timing, actors: Handles) -> Result:
    servers = [RemoteActor.remote() for _ in range(_half_the_cpus())]
    client = RemoteClient.remote(servers)
    actors.extend([*servers, client])
    return timeit(
        "1:n actor calls async",
        lambda: actorhub.get(client.small_value_batch.remote(FAN_OUT_CALLS)),
        FAN_OUT_CALLS * len(servers),
        timing,
    )


def _n_to_n(timing: Timing, actors: Handles) -> Result:
    servers = [RemoteActor.remote() for _ in range(_half_the_cpus())]
    callers = [RemoteClient.remote(servers) for _ in range(CALLERS)]
    actors.extend([*servers, *callers])
    return timeit(
        "n:n actor calls async",
        lambda: actorhub.get([c.spread_batch.remote(FAN_OUT_CALLS) for c in callers]),
        CALLERS * FAN_OUT_CALLS,
        timing,
    )


def _async_actor_sync(timing: Timing, actors: Handles) -> Result:
    a = RemoteAsyncActor.remote()
    actors.append(a)
    return timeit("1:1 async-actor calls sync", lambda: actorhub.get(a.small_value.remote()), 1, timing)


def _async_actor_async(timing: Timing, actors: Handles) -> Result:
    a = RemoteAsyncActor.remote()
    actors.append(a)
    return timeit(
        "1:1 async-actor calls async",
        lambda: actorhub.get([a.small_value.remote() for _ in range(BATCH)]),
        BATCH,
        timing,
    )


def _create_round() -> None:
    batch = [RemoteActor.remote() for _ in range(CREATION_BATCH)]
    # Created means able to answer: registration alone would flatter the number.
    actorhub.get([a.small_value.remote() for a in batch])
    for a in batch:
        actorhub.kill(a)


def _actor_creations(timing: Timing, actors: Handles) -> Result:
    return timeit("actor creations", _create_round, CREATION_BATCH, timing)


_INIT_SCRIPT = textwrap.dedent(
    """
    import time
    import actorhub
    from actorhub.cli.microbenchmark import RemoteActor

    start = time.perf_counter()
    actorhub.init()
    actorhub.get(RemoteActor.remote().small_value.remote())
    print(time.perf_counter() - start, flush=True)
    actorhub.shutdown()
    """
)


def _init_to_first_call(runs: int = INIT_RUNS) -> Result:
    """Seconds from init() to the first call's result, each run in a fresh interpreter."""
    seconds = []
    for run in range(runs):
        try:
            done = subprocess.run(
                [sys.executable, "-c", _INIT_SCRIPT],
                capture_output=True,
                text=True,
                timeout=INIT_RUN_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"init run {run + 1} took longer than {INIT_RUN_TIMEOUT_S:g} s") from None
        lines = done.stdout.split()
        if done.returncode != 0 or not lines:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise BenchmarkError(f"init run {run + 1} failed with exit code {done.returncode}: {tail}")
        seconds.append(float(lines[0]))
    return Result("init to first actor call (s)", statistics.fmean(seconds), statistics.pstdev(seconds), digits=3)


_ActorMetric = Callable[[Timing, Handles], Result]

# In Ray's order, then ours; the label is what --filter matches.
_ACTOR_METRICS: list[tuple[str, _ActorMetric]] = [
    ("1:1 actor calls sync per second", _actor_sync),
    ("1:1 actor calls async per second", _actor_async),
    ("1:1 actor calls concurrent per second", _actor_concurrent),
    ("1:n actor calls async per second", _one_to_n),
    ("n:n actor calls async per second", _n_to_n),
    ("1:1 async-actor calls sync per second", _async_actor_sync),
    ("1:1 async-actor calls async per second", _async_actor_async),
    ("actor creations per second", _actor_creations),
]
_INIT_LABEL = "init to first actor call (s)"


def _cluster_metrics() -> list[tuple[str, _ActorMetric]]:
    from actorhub.cli.microbenchmark_groups import GROUP_METRICS
    from actorhub.cli.microbenchmark_tasks import TASK_METRICS

    return _ACTOR_METRICS + TASK_METRICS + GROUP_METRICS


def metric_labels() -> list[str]:
    return [label for label, _ in _cluster_metrics()] + [_INIT_LABEL]


def _kill_all(actors: Sequence[ActorHandle[Any]]) -> None:
    for a in actors:
        try:
            actorhub.kill(a)
        except (ValueError, actorhub.exceptions.ActorHubError):
            continue  # already gone: nothing to free


def main(filter_text: str = "", *, scale: float = 1.0) -> list[Result]:
    """Run the metrics whose label contains `filter_text` (all when empty), printing one line each.

    The actor metrics share one cluster started here; the init metric starts its own, cold,
    in fresh interpreters after that cluster is gone.
    """
    timing = Timing.scaled(scale)
    selected = [(label, run) for label, run in _cluster_metrics() if filter_text in label]
    results: list[Result] = []
    if selected:
        from actorhub.cli.microbenchmark_groups import CUSTOM_RESOURCES

        actorhub.init(resources=CUSTOM_RESOURCES)  # the placement group metric's bundles, as in Ray
        try:
            for _, run in selected:
                actors: Handles = []
                try:
                    result = run(timing, actors)
                finally:
                    # Each metric's actors go, so later metrics do not share the CPUs with idle workers.
                    _kill_all(actors)
                print(result.line(), flush=True)
                results.append(result)
        finally:
            actorhub.shutdown()
    if filter_text in _INIT_LABEL:
        result = _init_to_first_call()
        print(result.line(), flush=True)
        results.append(result)
    return results
