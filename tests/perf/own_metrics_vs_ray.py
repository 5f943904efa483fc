"""actorhub's own three microbenchmark metrics, side by side with Ray's, against issue 8's targets.

    .venv/bin/python tests/perf/own_metrics_vs_ray.py [--rounds N] [--scale X] [--json]

`actorhub microbenchmark` prints three metrics that `ray microbenchmark` lacks. For each, in
turn, this runs tests/perf/ray_own_metrics.py with Ray's Python (vs-ray's cached environment,
~/.cache/actorhub-vs-ray/venv; Ray is never a dependency of ours), `ray stop --force`, then
`actorhub microbenchmark --filter <metric>`, one after the other as ../shared/bench/vs-ray does;
`--rounds N` repeats that N times, interleaved, and takes each side's median. The sizes and
durations handed to Ray's script are read from actorhub's microbenchmark, so both measure alike.

Issue 8's targets, with the ratio oriented so that above 1 means actorhub is better:
actor creations >= 5x Ray's rate (actorhub/Ray); init to first actor call <= 1/8 of Ray's time
(Ray/actorhub >= 8); get of a 100 MB numpy array no slower than Ray's (Ray/actorhub >= 1).
Exit code 1 when a target is missed, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RAY_SCRIPT = Path(__file__).resolve().parent / "ray_own_metrics.py"
RAY_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "actorhub-vs-ray" / "venv"
ACTORHUB = ROOT / ".venv" / "bin" / "actorhub"
# actorhub's _get_100mb_array times this many gets (a literal there).
GET_REPEATS = 20
RUN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Metric:
    label: str  # as both sides print it
    filter: str  # what --filter matches with this metric alone
    short: str  # the table's name
    higher_is_better: bool
    target: float  # the least ratio (oriented: > 1 is actorhub better) that passes
    target_text: str


METRICS = [
    Metric("actor creations per second", "actor creations", "actor creations /s", True, 5.0, ">= 5x Ray's rate"),
    Metric(
        "init to first actor call (s)",
        "init to first actor call",
        "init to first actor call (s)",
        False,
        8.0,
        "<= 1/8 of Ray's time",
    ),
    Metric(
        "get of a 100 MB numpy array (ms)",
        "get of a 100 MB numpy array",
        "get of a 100 MB numpy array (ms)",
        False,
        1.0,
        "no slower than Ray",
    ),
]
# Printed by Ray's script beside the init metric: the import and class definition before the clock.
IMPORT_LABEL = "import before init (s)"
_LINE = re.compile(r"^(?P<label>.+?) (?P<mean>[-+\d.eE]+) \+- (?P<std>[-+\d.eE]+)\s*$")


def parse(text: str) -> dict[str, tuple[float, float]]:
    """label -> (mean, std) of every `<label> <mean> +- <std>` line."""
    got = {}
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if m:
            got[m.group("label")] = (float(m.group("mean")), float(m.group("std")))
    return got


def ray_args(scale: float) -> list[str]:
    """The sizes and durations of actorhub's microbenchmark, for Ray's script."""
    from actorhub.cli import microbenchmark, microbenchmark_tasks
    from actorhub.cli.bench_timing import Timing

    timing = Timing.scaled(scale)
    return [
        f"--settle={timing.settle_s}",
        f"--warmup={timing.warmup_s}",
        f"--trial={timing.trial_s}",
        f"--trials={timing.trials}",
        f"--creation-batch={microbenchmark.CREATION_BATCH}",
        f"--init-runs={microbenchmark.INIT_RUNS}",
        f"--init-timeout={microbenchmark.INIT_RUN_TIMEOUT_S}",
        f"--large-items={microbenchmark_tasks.LARGE_ITEMS}",
        f"--get-repeats={GET_REPEATS}",
    ]


def _run(cmd: list[str], what: str) -> str:
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        print(f"{what} took longer than {RUN_TIMEOUT_S:g} s", file=sys.stderr)
        sys.exit(2)
    if done.returncode != 0:
        print(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}", file=sys.stderr)
        sys.exit(2)
    return done.stdout


def ray_stop() -> None:
    subprocess.run(
        [str(RAY_VENV / "bin" / "ray"), "stop", "--force"],
        cwd=ROOT,
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def run_ray(metric: Metric, extra: list[str]) -> dict[str, tuple[float, float]]:
    ray_stop()  # ray.init() would join a cluster left running instead of starting a fresh one
    try:
        out = _run(
            [str(RAY_VENV / "bin" / "python"), str(RAY_SCRIPT), f"--filter={metric.filter}", *extra],
            f"Ray's {metric.label}",
        )
    finally:
        ray_stop()
    return parse(out)


def run_actorhub(metric: Metric, scale: float) -> dict[str, tuple[float, float]]:
    cmd = [str(ACTORHUB), "microbenchmark", "--filter", metric.filter, *([f"--scale={scale}"] if scale != 1 else [])]
    return parse(_run(cmd, f"actorhub's {metric.label}"))


def actorhub_import_seconds(runs: int) -> tuple[float, float]:
    """What actorhub's init run imports before its clock starts, timed in fresh interpreters."""
    code = (
        "import time; t0 = time.perf_counter(); import actorhub; "
        "from actorhub.cli.microbenchmark import RemoteActor; print(time.perf_counter() - t0)"
    )
    seconds = [float(_run([sys.executable, "-c", code], "actorhub's import").split()[0]) for _ in range(runs)]
    return round(statistics.fmean(seconds), 3), round(statistics.pstdev(seconds), 3)


def ray_version() -> str:
    done = subprocess.run(
        [str(RAY_VENV / "bin" / "python"), "-c", "import ray; print(ray.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _median(values: list[tuple[float, float]]) -> dict[str, Any]:
    """The median of the rounds' means, with the std of the round nearest it and every round's mean."""
    means = [m for m, _ in values]
    med = statistics.median(means)
    nearest = min(values, key=lambda v: abs(v[0] - med))
    return {"mean": med, "std": nearest[1], "rounds": means}


def measure(rounds: int, scale: float, only: str) -> dict[str, Any]:
    extra = ray_args(scale)
    load_before = os.getloadavg()
    started = time.time()
    ray_runs: dict[str, list[tuple[float, float]]] = {}
    ah_runs: dict[str, list[tuple[float, float]]] = {}
    metrics = [m for m in METRICS if only in m.label]
    for r in range(rounds):
        for metric in metrics:
            print(f"round {r + 1}/{rounds}: {metric.label}: Ray ...", file=sys.stderr, flush=True)
            ray = run_ray(metric, extra)
            print(f"round {r + 1}/{rounds}: {metric.label}: actorhub ...", file=sys.stderr, flush=True)
            ah = run_actorhub(metric, scale)
            for side, got, runs in (("Ray", ray, ray_runs), ("actorhub", ah, ah_runs)):
                if metric.label not in got:
                    print(f"{side} printed no line for {metric.label!r}", file=sys.stderr)
                    sys.exit(2)
                runs.setdefault(metric.label, []).append(got[metric.label])
            if IMPORT_LABEL in ray:
                ray_runs.setdefault(IMPORT_LABEL, []).append(ray[IMPORT_LABEL])
                from actorhub.cli.microbenchmark import INIT_RUNS

                ah_runs.setdefault(IMPORT_LABEL, []).append(actorhub_import_seconds(INIT_RUNS))
    rows = []
    for metric in metrics:
        ray_m, ah_m = _median(ray_runs[metric.label]), _median(ah_runs[metric.label])
        r_mean, a_mean = float(ray_m["mean"]), float(ah_m["mean"])
        if metric.higher_is_better:
            ratio = a_mean / r_mean if r_mean else float("inf")
        else:
            ratio = r_mean / a_mean if a_mean else float("inf")
        rows.append(
            {
                "metric": metric.label,
                "name": metric.short,
                "ray": ray_m,
                "actorhub": ah_m,
                "ratio": ratio,
                "target": metric.target,
                "target_text": metric.target_text,
                "pass": ratio >= metric.target,
            }
        )
    info = None
    if IMPORT_LABEL in ray_runs:
        info = {
            "metric": IMPORT_LABEL,
            "ray": _median(ray_runs[IMPORT_LABEL]),
            "actorhub": _median(ah_runs[IMPORT_LABEL]),
        }
    return {
        "ray_version": ray_version(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "rounds": rounds,
        "scale": scale,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "seconds": round(time.time() - started, 1),
        "metrics": rows,
        "import_before_init": info,
    }


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def table(report: dict[str, Any]) -> str:
    rows: list[dict[str, Any]] = report["metrics"]
    head = ["metric", "Ray", "actorhub", "better by", "target", "verdict"]
    body = [
        [
            r["name"],
            f"{_num(r['ray']['mean'])} +- {_num(r['ray']['std'])}",
            f"{_num(r['actorhub']['mean'])} +- {_num(r['actorhub']['std'])}",
            f"{r['ratio']:.2f}x",
            r["target_text"],
            "PASS" if r["pass"] else "FAIL",
        ]
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    info = report.get("import_before_init")
    if info:
        ray_i, ah_i = info["ray"]["mean"], info["actorhub"]["mean"]
        out.append(
            f"(not in the init metric, on either side: the import before init(): Ray {ray_i:.3f} s, "
            f"actorhub {ah_i:.3f} s)"
        )
    lb, la = report["load_before"], report["load_after"]
    out.append(
        f"Ray {report['ray_version']}; better by: actorhub/Ray for rates, Ray/actorhub for times; "
        f"rounds {report['rounds']}; load average {lb[0]:.2f} before, {la[0]:.2f} after"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="repeat Ray then actorhub N times; medians")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply timeit's durations (0.1: a smoke run)")
    parser.add_argument("--filter", default="", help="only the metrics whose label contains TEXT")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.scale <= 0:
        parser.error("--rounds must be >= 1 and --scale positive")
    if not (RAY_VENV / "bin" / "python").exists():
        print(f"no Ray environment at {RAY_VENV}: run ../shared/bench/vs-ray once to make it", file=sys.stderr)
        return 2
    if not ACTORHUB.exists():
        print(f"no {ACTORHUB}: run `make run` first", file=sys.stderr)
        return 2
    if not any(args.filter in m.label for m in METRICS):
        parser.error(f"no metric matches {args.filter!r}")
    report = measure(args.rounds, args.scale, args.filter)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if all(r["pass"] for r in report["metrics"]) else 1


if __name__ == "__main__":
    sys.exit(main())
