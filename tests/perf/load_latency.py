"""Latency of a sync actor call while 100 other callers load the same actor (issue 8).

    python tests/perf/load_latency.py [--callers 100] [--calls 2000] [--duration S] [--json]

What: one serial service actor with plain sync methods; `--callers` caller actors, each its
own worker process, call it in a loop (`get(service.ping.remote())`, with an optional think
time) until told to stop. The driver times `--calls` sync calls of its own to the service,
first with the callers idle (the baseline) and then while they load it, and prints p50, p90,
p99 and max in ms for both, and the callers' throughput over the loaded window.

Why: the microbenchmark's "1:1 actor calls sync" measures an idle actor. A service shared by
many callers is the common case, and its tail latency (one caller waiting behind the others'
batches, a server thread per caller stream) is what a user feels. Not part of the test suite:
it wants a quiet machine and takes a minute or two.

Output: one `metric value` line per figure, names stable so runs can be compared (`--json`
prints one JSON object instead). Exit code 1 with a one-line message when the callers cannot
all be created, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import actorhub
from actorhub.api.actor_handle import ActorHandle

Handle = ActorHandle[Any]

# Calls the driver makes before each timed run, so connection setup is not in the figures.
WARMUP_CALLS = 50
# How long a wave of callers may take to answer their first call.
READY_TIMEOUT_S = 120.0


class Service:
    """The loaded actor: serial (the default), plain sync methods."""

    def __init__(self) -> None:
        self.served = 0

    def ping(self) -> int:
        self.served += 1
        return self.served

    def pid(self) -> int:
        return os.getpid()


class Caller:
    """Calls the service in a loop from its own process until `stop` is called.

    Threaded (max_concurrency > 1) so `done` and `stop` run while `run` loops.
    """

    def __init__(self, service: Handle, think_s: float) -> None:
        self.service = service
        self.think_s = think_s
        self.calls = 0
        self.stopping = threading.Event()

    def ready(self) -> int:
        return os.getpid()

    def run(self) -> int:
        while not self.stopping.is_set():
            actorhub.get(self.service.ping.remote())
            self.calls += 1
            if self.think_s:
                time.sleep(self.think_s)
        return self.calls

    def done(self) -> int:
        return self.calls

    def stop(self) -> None:
        self.stopping.set()


RemoteService = actorhub.remote(Service)
RemoteCaller = actorhub.remote(max_concurrency=4)(Caller)


@dataclass(frozen=True)
class Latency:
    calls: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ordered = sorted(s * 1000.0 for s in seconds)
        return cls(
            calls=len(ordered),
            p50_ms=percentile(ordered, 50),
            p90_ms=percentile(ordered, 90),
            p99_ms=percentile(ordered, 99),
            max_ms=ordered[-1],
            mean_ms=sum(ordered) / len(ordered),
        )


@dataclass(frozen=True)
class Report:
    callers: int
    think_ms: float
    create_s: float
    baseline: Latency
    loaded: Latency
    load_calls: int
    load_window_s: float
    load_calls_per_s: float
    service_calls_per_s: float


class SetupError(Exception):
    """The cluster could not host the benchmark (callers not created); the message says why."""


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def time_calls(service: Handle, calls: int, duration_s: float) -> list[float]:
    """Seconds per sync call: `calls` of them, or as many as fit in `duration_s` when that is > 0."""
    for _ in range(WARMUP_CALLS):
        actorhub.get(service.ping.remote())
    out: list[float] = []
    deadline = time.perf_counter() + duration_s
    while (len(out) < calls) if duration_s <= 0 else (time.perf_counter() < deadline):
        start = time.perf_counter()
        actorhub.get(service.ping.remote())
        out.append(time.perf_counter() - start)
    return out


def create_callers(service: Handle, count: int, wave: int, think_s: float) -> list[Handle]:
    """`count` callers, created `wave` at a time; each wave answers a call before the next starts.

    Waves keep a slow start visible (which wave, how many were up) instead of one long hang.
    """
    callers: list[Handle] = []
    while len(callers) < count:
        batch = [RemoteCaller.remote(service, think_s) for _ in range(min(wave, count - len(callers)))]
        try:
            actorhub.get([c.ready.remote() for c in batch], timeout=READY_TIMEOUT_S)
        except actorhub.exceptions.GetTimeoutError:
            raise SetupError(
                f"{len(callers)} callers were up, and the next {len(batch)} did not answer within "
                f"{READY_TIMEOUT_S:g} s (see the node agent's log in the session directory)"
            ) from None
        callers.extend(batch)
        print(f"# {len(callers)}/{count} callers up", file=sys.stderr, flush=True)
    return callers


def total_done(callers: Sequence[Handle]) -> int:
    return sum(actorhub.get([c.done.remote() for c in callers]))


def wait_until_all_calling(callers: Sequence[Handle], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(n > 0 for n in actorhub.get([c.done.remote() for c in callers])):
            return
        time.sleep(0.2)
    raise SetupError(f"not every caller had made a call after {timeout_s:g} s of load")


def measure(args: argparse.Namespace) -> Report:
    service = RemoteService.remote()
    actorhub.get(service.pid.remote())
    start = time.perf_counter()
    callers = create_callers(service, args.callers, args.wave, args.think_ms / 1000.0)
    create_s = time.perf_counter() - start
    try:
        baseline = Latency.of(time_calls(service, args.calls, args.duration))
        runs = [c.run.remote() for c in callers]
        wait_until_all_calling(callers)
        before, t0 = total_done(callers), time.perf_counter()
        served0 = actorhub.get(service.ping.remote())
        loaded = Latency.of(time_calls(service, args.calls, args.duration))
        served1 = actorhub.get(service.ping.remote())
        after, t1 = total_done(callers), time.perf_counter()
        actorhub.get([c.stop.remote() for c in callers])
        actorhub.get(runs, timeout=60.0)
    finally:
        kill_all([*callers, service])
    window = t1 - t0
    return Report(
        callers=args.callers,
        think_ms=args.think_ms,
        create_s=create_s,
        baseline=baseline,
        loaded=loaded,
        load_calls=after - before,
        load_window_s=window,
        load_calls_per_s=(after - before) / window,
        service_calls_per_s=(served1 - served0) / window,
    )


def kill_all(actors: Sequence[Handle]) -> None:
    for actor in actors:
        try:
            actorhub.kill(actor)
        except (ValueError, actorhub.exceptions.ActorHubError):
            continue  # already gone


def lines(report: Report) -> list[str]:
    out = [f"callers {report.callers}", f"think_ms {report.think_ms:g}", f"create_callers_s {report.create_s:.2f}"]
    for phase, lat in (("baseline", report.baseline), ("loaded", report.loaded)):
        out += [
            f"{phase}_calls {lat.calls}",
            f"{phase}_p50_ms {lat.p50_ms:.3f}",
            f"{phase}_p90_ms {lat.p90_ms:.3f}",
            f"{phase}_p99_ms {lat.p99_ms:.3f}",
            f"{phase}_max_ms {lat.max_ms:.3f}",
        ]
    out += [
        f"load_window_s {report.load_window_s:.2f}",
        f"load_calls {report.load_calls}",
        f"load_calls_per_s {report.load_calls_per_s:.0f}",
        f"service_calls_per_s {report.service_calls_per_s:.0f}",
    ]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--address", default=None, help="join this cluster (HOST:PORT or auto); default: start one")
    p.add_argument("--callers", type=int, default=100, help="caller actors loading the service (default 100)")
    p.add_argument("--calls", type=int, default=2000, help="timed driver calls per phase (default 2000)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="time each phase for this many seconds instead of a number of calls")
    p.add_argument("--think-ms", type=float, default=0.0, help="callers' pause between calls (default 0)")
    p.add_argument("--wave", type=int, default=25, help="callers created at a time (default 25)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = p.parse_args(argv)
    if args.callers < 1 or args.calls < 1 or args.wave < 1 or args.duration < 0 or args.think_ms < 0:
        p.error("--callers, --calls and --wave must be positive; --duration and --think-ms not negative")
    return args


def run_on_cluster(address: str | None, body: Callable[[], Report]) -> Report:
    actorhub.init(address=address)
    try:
        return body()
    finally:
        actorhub.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run_on_cluster(args.address, lambda: measure(args))
    except SetupError as e:
        print(f"load_latency: {e}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(report), indent=2) if args.json else "\n".join(lines(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
