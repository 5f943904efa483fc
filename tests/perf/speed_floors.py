"""Issue 8's speed floors, each measured as Ray's and actorhub's runs of one metric side by side.

    python tests/perf/speed_floors.py [--rounds N] [--json]

A full `vs-ray` run takes many minutes, and this machine's speed drifts over that time (the
same raw gRPC echo has measured 2x apart within an hour); whichever side runs later pays for a
slowdown. Here each floor metric is its own `vs-ray METRIC` run, Ray's and ours within a
minute of each other, and the rounds go metric by metric, round after round, so a drift
touches both sides of each pair alike. The ratio reported is the median over the rounds.
Exit status 1 when a median misses its floor. Not part of `make test`: it wants a quiet machine.
The floor on actor creations (5x) is `tests/perf/own_metrics_vs_ray.py`'s, which already runs
its metrics side by side in interleaved rounds (`ray microbenchmark` has no such metric).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VS_RAY = ROOT.parent / "shared" / "bench" / "vs-ray"
_ROW = re.compile(r"^(?P<metric>.+?)\s+(?P<ray>[\d.]+)\s+(?P<ours>[\d.]+)\s+(?P<ratio>[\d.]+)x\s*$")

# Issue 8: hold these (actorhub/Ray, same sitting).
FLOORS: dict[str, float] = {
    "1:1 actor calls sync": 1.5,
    "1:1 actor calls async": 1.0,
    "single client tasks sync": 1.5,
    "single client tasks async": 1.0,
}
# vs-ray's pattern is a substring: these pick exactly one metric each.
_PATTERNS = {
    "1:1 actor calls sync": "1:1 actor calls sync",
    "1:1 actor calls async": "1:1 actor calls async",
    "single client tasks sync": "single client tasks sync",
    "single client tasks async": "single client tasks async",
}


def run_pair(pattern: str) -> tuple[float, float, float]:
    """(Ray /s, actorhub /s, ratio) of one vs-ray run of one metric."""
    done = subprocess.run(["bash", str(VS_RAY), pattern], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"vs-ray {pattern!r} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    for line in done.stdout.splitlines():
        row = _ROW.match(line)
        if row and pattern in row.group("metric"):
            return float(row.group("ray")), float(row.group("ours")), float(row.group("ratio"))
    raise SystemExit(f"no row for {pattern!r} in vs-ray's output:\n{done.stdout}")


def measure(rounds: int) -> dict[str, Any]:
    pairs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in FLOORS}
    for n in range(rounds):
        for name, pattern in _PATTERNS.items():
            pairs[name].append(run_pair(pattern))
            print(f"round {n + 1}: {name}: {pairs[name][-1][2]:.2f}x", file=sys.stderr, flush=True)
    metrics = []
    for name, floor in FLOORS.items():
        ratios = [r for _, _, r in pairs[name]]
        median = statistics.median(ratios)
        metrics.append({
            "name": name, "floor": floor, "median_ratio": median, "ratios": ratios,
            "ray_median": statistics.median(r for r, _, _ in pairs[name]),
            "actorhub_median": statistics.median(o for _, o, _ in pairs[name]),
            "pass": median >= floor,
        })
    return {"rounds": rounds, "metrics": metrics}


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{'metric':28s} {'Ray /s':>9s} {'actorhub /s':>11s} {'median':>7s} {'floor':>6s}  ratios",
    ]
    for m in report["metrics"]:
        lines.append(
            f"{m['name']:28s} {m['ray_median']:9.1f} {m['actorhub_median']:11.1f} {m['median_ratio']:6.2f}x "
            f"{m['floor']:5.1f}x  {' '.join(f'{r:.2f}' for r in m['ratios'])} {'PASS' if m['pass'] else 'FAIL'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not VS_RAY.exists():
        raise SystemExit(f"{VS_RAY} not found")
    report = measure(args.rounds)
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0 if all(m["pass"] for m in report["metrics"]) else 1


if __name__ == "__main__":
    sys.exit(main())
