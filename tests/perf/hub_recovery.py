"""How fast the cluster gets its hub back after a SIGKILL, and what callers see meanwhile.

    python tests/perf/hub_recovery.py [--rounds 10] [--spacing S] [--json]

What: starts a local cluster (`init()`, so the hub runs under its supervisor) and a detached
named actor. Each round SIGKILLs the real hub process (`<session>/hub.pid`) and measures:
- recovery: from the kill to the first `get_actor(name)` that succeeds. The driver starts the
  lookup right after the kill, and a lookup that gives up (ControlPlaneUnavailableError, or the
  hub's channel failing) is tried again at once, so the figure is what a program that retries
  sees: the supervisor's restart, the new hub's boot and reload, and the client's reconnect;
- hub answers: from the kill to the new hub's first answer on a fresh channel (a thread polls
  every 10 ms), the server's part of the recovery; the rest is the driver's reconnect;
- calls/s during the outage: a thread of the same driver makes sync calls on a handle made
  before the kill, and the calls that completed between the kill and the successful lookup
  are counted. Before the first round the same thread measures the rate with the hub up.

Between kills the script waits until the hub has served for `--spacing` s (default: the
supervisor's healthy uptime and its standby's delay, plus a margin), since the supervisor
restarts a hub that dies sooner with a backoff (a crash loop) and boots it cold before its
standby exists, which would be measured instead.

The caller thread and the lookups share one interpreter (the GIL), so the rates are those of a
driver that is doing both; a quiet machine gives steadier figures.

Output: a table, one row per round, then the median and max of the recovery times and the
median and min of the outage call rates (`--json`: one JSON object). Exit code 1 when a round
does not recover within `--timeout`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import actorhub
from actorhub.cluster.session import Session
from actorhub.config import RpcDeadlines
from actorhub.exceptions import ActorHubSystemError, RpcFailedError
from actorhub.hub.supervisor import HEALTHY_UPTIME_S, STANDBY_DELAY_S
from actorhub.wire.hub import HubClient
from actorhub.wire.records import ClusterStatus
from actorhub.wire.transport import ChannelPool

NAME = "hub-recovery-svc"
BASELINE_S = 2.0


class Service:
    def ping(self) -> int:
        return os.getpid()


@dataclass
class Round:
    recovery_s: float
    hub_answers_s: float
    """From the kill to the new hub's first answer on a fresh channel."""
    outage_calls: int
    outage_calls_per_s: float
    lookup_attempts: int
    old_hub_pid: int
    new_hub_pid: int


@dataclass
class Report:
    rounds: list[Round] = field(default_factory=list)
    baseline_calls_per_s: float = 0.0
    hub_restarts: int = 0

    def recovery(self) -> list[float]:
        return [r.recovery_s for r in self.rounds]

    def rates(self) -> list[float]:
        return [r.outage_calls_per_s for r in self.rounds]


class Caller(threading.Thread):
    """Sync calls on one handle, in a loop; keeps each call's completion time."""

    def __init__(self, handle: Any) -> None:
        super().__init__(name="caller", daemon=True)
        self.handle = handle
        self.done: list[float] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                actorhub.get(self.handle.ping.remote(), timeout=60)
            except Exception as e:
                # Reported after the rounds; the benchmark goes on. The pause keeps a failing
                # handle from spinning on the GIL the lookups need.
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.01)
                continue
            self.done.append(time.monotonic())

    def between(self, start: float, end: float) -> int:
        return sum(1 for t in self.done if start <= t <= end)

    def stop(self) -> None:
        self.stopping.set()
        self.join(120)


def hub_status(session: Session) -> ClusterStatus | None:
    """The hub's status through a fresh channel with a short deadline; None when it does not answer."""
    channels = ChannelPool(session.token)
    try:
        return HubClient(channels, session.hub_address, RpcDeadlines(control_s=5.0, unavailable_retry_s=0.0)) \
            .cluster_status()
    except (RpcFailedError, OSError):
        return None
    finally:
        channels.close()


def wait_until_healthy(session: Session, spacing_s: float, timeout_s: float) -> ClusterStatus:
    """Wait until the hub answers and has served `spacing_s`, so its death is not a crash loop."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = hub_status(session)
        if status is not None and time.time() - status.hub_started_at >= spacing_s:
            return status
        if time.monotonic() > deadline:
            raise SystemExit(f"hub_recovery: the hub was not up for {spacing_s:g} s within {timeout_s:g} s")
        time.sleep(0.1)


def watch_hub(session: Session, old_pid: int, answered: list[float], timeout_s: float) -> None:
    """Note when a new hub first answers a fresh channel: the server's own recovery, without
    the driver's reconnect to it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid = int(session.pid_file("hub").read_text())
        except (OSError, ValueError):
            pid = old_pid  # between the old pid file and the new one
        if pid != old_pid and hub_status(session) is not None:
            answered.append(time.monotonic())
            return
        time.sleep(0.01)


def one_round(session: Session, caller: Caller, timeout_s: float) -> Round:
    old = int(session.pid_file("hub").read_text())
    answered: list[float] = []
    watcher = threading.Thread(target=watch_hub, args=(session, old, answered, timeout_s), daemon=True)
    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    watcher.start()
    attempts = 0
    while True:
        attempts += 1
        try:
            actorhub.get_actor(NAME)
            break
        except ActorHubSystemError:  # ControlPlaneUnavailableError and the RPC errors under it
            if time.monotonic() - killed_at > timeout_s:
                raise SystemExit(f"hub_recovery: no successful get_actor within {timeout_s:g} s of the kill") from None
    found_at = time.monotonic()
    took = found_at - killed_at
    calls = caller.between(killed_at, found_at)
    watcher.join(timeout_s)
    new = int(session.pid_file("hub").read_text())
    hub_answers = answered[0] - killed_at if answered else float("nan")
    return Round(took, hub_answers, calls, calls / took if took > 0 else 0.0, attempts, old, new)


def measure(args: argparse.Namespace) -> Report:
    context = actorhub.init(num_cpus=2)
    try:
        session = Session(Path(context.session_dir))
        handle = actorhub.remote(Service).options(name=NAME, lifetime="detached").remote()
        actorhub.get(handle.ping.remote(), timeout=60)
        caller = Caller(handle)
        caller.start()
        report = Report()
        try:
            time.sleep(0.5)  # the caller's first calls (connection setup) stay out of the baseline
            start = time.monotonic()
            time.sleep(BASELINE_S)
            report.baseline_calls_per_s = caller.between(start, time.monotonic()) / BASELINE_S
            for i in range(args.rounds):
                wait_until_healthy(session, args.spacing, args.spacing + args.timeout)
                result = one_round(session, caller, args.timeout)
                report.rounds.append(result)
                if not args.json:
                    print(f"round {i + 1}/{args.rounds}: {result.recovery_s:.3f} s", file=sys.stderr, flush=True)
            status = wait_until_healthy(session, 0.0, args.timeout)
            report.hub_restarts = status.hub_restarts
        finally:
            caller.stop()
        if caller.errors:
            print(f"hub_recovery: {len(caller.errors)} calls on the existing handle failed, e.g. {caller.errors[0]}",
                  file=sys.stderr)
        return report
    finally:
        actorhub.shutdown()


def lines(report: Report) -> list[str]:
    out = [f"{'round':>5}  {'recovery (s)':>12}  {'hub answers (s)':>15}  {'lookups':>7}  {'outage calls':>12}  "
           f"{'calls/s in outage':>17}"]
    for i, r in enumerate(report.rounds, 1):
        out.append(f"{i:>5}  {r.recovery_s:>12.3f}  {r.hub_answers_s:>15.3f}  {r.lookup_attempts:>7}  "
                   f"{r.outage_calls:>12}  {r.outage_calls_per_s:>17.0f}")
    recovery, rates = report.recovery(), report.rates()
    answers = [r.hub_answers_s for r in report.rounds]
    out += [
        "",
        f"recovery to first get_actor (s): median {statistics.median(recovery):.3f}, max {max(recovery):.3f}",
        f"new hub's first answer on a fresh channel (s): median {statistics.median(answers):.3f}, "
        f"max {max(answers):.3f}",
        f"calls/s on an existing handle during the outage: median {statistics.median(rates):.0f}, "
        f"min {min(rates):.0f} (hub up: {report.baseline_calls_per_s:.0f})",
        f"hub restarts reported by the hub: {report.hub_restarts}",
    ]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="hub kills (default 10)")
    parser.add_argument("--spacing", type=float, default=max(HEALTHY_UPTIME_S, STANDBY_DELAY_S) + 2.0,
                        help="seconds the hub serves before each kill (default: 12, see above)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a round may take to recover")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = measure(args)
    if args.json:
        recovery, rates = report.recovery(), report.rates()
        print(json.dumps({**asdict(report), "recovery_median_s": statistics.median(recovery),
                          "recovery_max_s": max(recovery), "outage_calls_per_s_median": statistics.median(rates)},
                         indent=2))
    else:
        print("\n".join(lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
