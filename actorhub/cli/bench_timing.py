"""How `actorhub microbenchmark` measures: Ray's `timeit`, and the line each metric prints.

A warm-up run sizes a step (a tenth of the warm-up's call count, plus one), then each timed
trial runs whole steps until its time is up and counts `calls * multiplier / elapsed`; a line
shows the mean and the population standard deviation of the trials, in Ray's format.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from actorhub.exceptions import ActorHubSystemError

# Ray's batch: 1000 calls per timed call of the "async" metrics.
BATCH = 1000


class BenchmarkError(ActorHubSystemError):
    """A benchmark run failed; the message says which and why."""


@dataclass(frozen=True)
class Timing:
    """How long timeit() pauses, warms up and measures."""

    settle_s: float = 0.5
    warmup_s: float = 1.0
    trial_s: float = 1.5
    trials: int = 4

    @classmethod
    def scaled(cls, scale: float) -> Timing:
        base = cls()
        return cls(base.settle_s * scale, base.warmup_s * scale, base.trial_s * scale, base.trials)


@dataclass(frozen=True)
class Result:
    label: str  # what the line starts with, e.g. "1:1 actor calls sync per second"
    mean: float
    std: float
    digits: int = 2

    def line(self) -> str:
        return f"{self.label} {self.mean:.{self.digits}f} +- {self.std:.{self.digits}f}"


def timeit(name: str, fn: Callable[[], object], multiplier: float, timing: Timing) -> Result:
    """Ray's `timeit`: the rate of `fn` calls times `multiplier`, per second."""
    # A pause lets the previous metric's stragglers (exiting workers, late replies) settle.
    time.sleep(timing.settle_s)
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < timing.warmup_s:
        fn()
        count += 1
    # Whole steps between clock reads, so a fast fn is not dominated by reading the clock.
    step = count // 10 + 1
    rates = []
    for _ in range(timing.trials):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < timing.trial_s:
            for _ in range(step):
                fn()
            count += step
        rates.append(multiplier * count / (time.perf_counter() - start))
    return Result(f"{name} per second", statistics.fmean(rates), statistics.pstdev(rates))
