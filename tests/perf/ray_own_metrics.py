"""actorhub's own three microbenchmark metrics, measured on Ray. Runs under Ray's Python, never ours.

    ~/.cache/actorhub-vs-ray/venv/bin/python tests/perf/ray_own_metrics.py [--filter TEXT]

`actorhub microbenchmark` prints three metrics that `ray microbenchmark` lacks: "actor
creations per second", "init to first actor call (s)" and "get of a 100 MB numpy array (ms)".
This script measures the same workloads on Ray the way actorhub/cli/microbenchmark.py (and
microbenchmark_tasks.py, bench_timing.py) measure them on actorhub, and prints each in the same
line format, `<label> <mean> +- <std>`, so one parser reads both:

- actor creations: rounds of CREATION_BATCH (10) actors (num_cpus=0), each called once and
  waited for (created means able to answer), then killed; timed by actorhub's `timeit` (a
  pause, a 1 s warm-up sizing a step, 4 trials of 1.5 s), counting CREATION_BATCH per round.
- init to first actor call: INIT_RUNS (3) fresh interpreters, each importing ray and defining
  the actor class, then timing `ray.init()` (a fresh local cluster) up to the result of the
  first call on a new actor; then `ray.shutdown()`. As in actorhub's, the import is before the
  clock starts. Mean and population std of the runs.
- get of a 100 MB numpy array: `ray.put(numpy.ones(12_500_000, int64))`, one untimed get, then
  20 timed gets, in ms; mean and population std.

tests/perf/own_metrics_vs_ray.py runs this with the sizes and durations it reads from actorhub,
so both sides stay the same; the defaults here are actorhub's at the time of writing. A local
cluster started by `ray.init()` here is shut down at the end; the runner also `ray stop --force`s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

CREATIONS_LABEL = "actor creations per second"
INIT_LABEL = "init to first actor call (s)"
GET_LABEL = "get of a 100 MB numpy array (ms)"
LABELS = [CREATIONS_LABEL, GET_LABEL, INIT_LABEL]  # actorhub's order: cluster metrics, then init

# The init run: what actorhub's _INIT_SCRIPT does, with ray. The import and the class are before
# the clock, as actorhub's `import actorhub` and `from actorhub.cli.microbenchmark import
# RemoteActor` are. The second number printed (import, untimed by the metric) is for reference.
_INIT_SCRIPT = textwrap.dedent(
    """
    import time
    t0 = time.perf_counter()
    import ray

    @ray.remote(num_cpus=0)
    class Actor:
        def small_value(self):
            return b"ok"

    imported = time.perf_counter() - t0
    start = time.perf_counter()
    ray.init()
    ray.get(Actor.remote().small_value.remote())
    print(time.perf_counter() - start, imported, flush=True)
    ray.shutdown()
    """
)


def line(label: str, mean: float, std: float, digits: int = 2) -> str:
    """actorhub's Result.line()."""
    return f"{label} {mean:.{digits}f} +- {std:.{digits}f}"


def timeit(name: str, fn: Callable[[], object], multiplier: float, args: argparse.Namespace) -> str:
    """actorhub's bench_timing.timeit (Ray's timeit with shorter durations)."""
    time.sleep(args.settle)
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < args.warmup:
        fn()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(args.trials):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < args.trial:
            for _ in range(step):
                fn()
            count += step
        rates.append(multiplier * count / (time.perf_counter() - start))
    return line(f"{name} per second", statistics.fmean(rates), statistics.pstdev(rates))


def actor_creations(args: argparse.Namespace) -> str:
    import ray

    @ray.remote(num_cpus=0)
    class Actor:
        def small_value(self) -> bytes:
            return b"ok"

    def create_round() -> None:
        batch = [Actor.remote() for _ in range(args.creation_batch)]
        ray.get([a.small_value.remote() for a in batch])
        for a in batch:
            ray.kill(a)

    return timeit("actor creations", create_round, args.creation_batch, args)


def get_100mb_array(args: argparse.Namespace) -> str:
    import numpy
    import ray

    ref = ray.put(numpy.ones(args.large_items, dtype=numpy.int64))
    ray.get(ref)
    samples = []
    for _ in range(args.get_repeats):
        start = time.perf_counter()
        ray.get(ref)
        samples.append((time.perf_counter() - start) * 1000)
    return line(GET_LABEL, statistics.fmean(samples), statistics.pstdev(samples), digits=3)


def init_to_first_call(args: argparse.Namespace) -> list[str]:
    seconds, imports = [], []
    for run in range(args.init_runs):
        try:
            done = subprocess.run(
                [sys.executable, "-c", _INIT_SCRIPT],
                capture_output=True,
                text=True,
                timeout=args.init_timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(f"init run {run + 1} took longer than {args.init_timeout:g} s") from None
        words = done.stdout.split()
        if done.returncode != 0 or len(words) < 2:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise SystemExit(f"init run {run + 1} failed with exit code {done.returncode}: {tail}")
        seconds.append(float(words[0]))
        imports.append(float(words[1]))
    return [
        line(INIT_LABEL, statistics.fmean(seconds), statistics.pstdev(seconds), digits=3),
        line("import before init (s)", statistics.fmean(imports), statistics.pstdev(imports), digits=3),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filter", default="", help="only the metrics whose label contains TEXT")
    parser.add_argument("--settle", type=float, default=0.5, help="timeit's pause before the warm-up, s")
    parser.add_argument("--warmup", type=float, default=1.0, help="timeit's warm-up, s")
    parser.add_argument("--trial", type=float, default=1.5, help="timeit's trial length, s")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--creation-batch", type=int, default=10, help="actors created per round")
    parser.add_argument("--init-runs", type=int, default=3, help="fresh interpreters for the init metric")
    parser.add_argument("--init-timeout", type=float, default=120.0, help="s per init run")
    parser.add_argument("--large-items", type=int, default=12_500_000, help="int64 items of the big array")
    parser.add_argument("--get-repeats", type=int, default=20, help="timed gets of the big array")
    args = parser.parse_args(argv)

    selected = [label for label in LABELS if args.filter in label]
    if not selected:
        raise SystemExit(f"no metric matches {args.filter!r}; the metrics: {', '.join(LABELS)}")
    cluster = [label for label in selected if label != INIT_LABEL]
    if cluster:
        import ray

        ray.init()
        try:
            for label in cluster:
                run = actor_creations if label == CREATIONS_LABEL else get_100mb_array
                print(run(args), flush=True)
        finally:
            ray.shutdown()
    if INIT_LABEL in selected:
        for text in init_to_first_call(args):
            print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
