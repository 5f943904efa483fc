"""Rewrite BENCHMARKS.md from a run of ../shared/bench/vs-ray (Ray's and actorhub's
microbenchmarks, one after the other on this machine).

    python tests/perf/write_benchmarks.py [--filter TEXT] [--from-output FILE]
        [--own-metrics [--own-metrics-rounds N] | --own-metrics-from FILE]

`--from-output` builds the page from vs-ray output saved earlier instead of running it.
`--own-metrics` also runs tests/perf/own_metrics_vs_ray.py after vs-ray and adds a second table,
"actorhub's own metrics vs Ray" (the three metrics `ray microbenchmark` lacks, against issue 8's
targets); `--own-metrics-from` takes its `--json` output saved earlier instead. `--cross-node`
adds the node-to-node transfer figures of tests/perf/cross_node_transfer.py (issue 10), `--gateway`
the calls per second through the gateway (tests/perf/gateway_bench.py, issue 14). Not part
of `make test`: a run takes many minutes and wants a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VS_RAY = ROOT.parent / "shared" / "bench" / "vs-ray"
OWN_METRICS = ROOT / "tests" / "perf" / "own_metrics_vs_ray.py"
CROSS_NODE = ROOT / "tests" / "perf" / "cross_node_transfer.py"
GATEWAY = ROOT / "tests" / "perf" / "gateway_bench.py"
# One row of vs-ray's table: metric, Ray's rate, ours, the ratio.
_ROW = re.compile(r"^(?P<metric>.+?)\s+(?P<ray>[\d.]+)\s+(?P<ours>[\d.]+)\s+(?P<ratio>[\d.]+)x\s*$")


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model or platform.processor() or 'unknown CPU'}), {memory:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def ray_version() -> str:
    """The version of Ray in vs-ray's cached environment, or "unknown"."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "actorhub-vs-ray" / "venv"
    done = subprocess.run(
        [str(cache / "bin" / "python"), "-c", "import ray; print(ray.__version__)"],
        capture_output=True, text=True, check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def run_vs_ray(filter_text: str) -> str:
    if not VS_RAY.exists():
        raise SystemExit(f"{VS_RAY} not found: BENCHMARKS.md is made beside the shared bench folder")
    done = subprocess.run(
        ["bash", str(VS_RAY), *([filter_text] if filter_text else [])],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"vs-ray failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def render(output: str, filter_text: str, note: str = "") -> str:
    rows = [m for m in map(_ROW.match, output.splitlines()) if m and m.group("metric").strip() != "metric"]
    if not rows:
        raise SystemExit(f"no metric rows in vs-ray's output:\n{output}")
    only_ray = [line for line in output.splitlines() if line.startswith("printed by Ray only")]
    lines = [
        "# Benchmarks",
        "",
        "Written by `tests/perf/write_benchmarks.py` (`make bench`) from `../shared/bench/vs-ray`, which runs",
        "`ray microbenchmark` (Ray in its own environment) and `actorhub microbenchmark` one after the",
        "other on the same machine. Ratios above 1 mean actorhub is faster. Absolute rates drift with the",
        "machine's load from run to run; compare ratios, and runs made in one sitting.",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine()}",
        f"- Ray: {ray_version()}",
        f"- filter: {filter_text or '(all metrics)'}",
        *([f"- how: {note}"] if note else []),
        "",
        "| metric | Ray /s | actorhub /s | actorhub/Ray |",
        "|---|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(f"| {m.group('metric').strip()} | {m.group('ray')} | {m.group('ours')} | {m.group('ratio')}x |")
    if only_ray:
        lines += ["", *only_ray]
    return "\n".join(lines) + "\n"


def run_own_metrics(rounds: int) -> dict[str, Any]:
    """own_metrics_vs_ray.py's JSON report; its exit code 1 (a target missed) still makes a table."""
    done = subprocess.run(
        [sys.executable, str(OWN_METRICS), "--json", f"--rounds={rounds}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"own_metrics_vs_ray.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def render_own(report: dict[str, Any]) -> str:
    """The second table: actorhub's own metrics vs Ray, from own_metrics_vs_ray.py's report."""
    load_before, load_after = report["load_before"], report["load_after"]
    lines = [
        "",
        "## actorhub's own metrics vs Ray",
        "",
        "Three metrics `actorhub microbenchmark` prints and `ray microbenchmark` lacks, measured on Ray by",
        "`tests/perf/ray_own_metrics.py` the same way (same sizes, warm-up and trials) and compared by",
        "`tests/perf/own_metrics_vs_ray.py`, one side after the other per metric. \"better by\" is above 1",
        "when actorhub is better: actorhub/Ray for the rate, Ray/actorhub for the times. Targets from issue 8.",
        "",
        f"- Ray: {report['ray_version']}; rounds: {report['rounds']} (each side's median)",
        f"- load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        "",
        "| metric | Ray | actorhub | better by | target | |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in report["metrics"]:
        lines.append(
            f"| {r['name']} | {_num(r['ray']['mean'])} | {_num(r['actorhub']['mean'])} | {r['ratio']:.2f}x "
            f"| {r['target_text']} | {'PASS' if r['pass'] else 'FAIL'} |"
        )
    info = report.get("import_before_init")
    if info:
        lines += [
            "",
            "The init metric starts its clock after the import, on both sides; the import and the actor class's",
            f"definition before it took {info['ray']['mean']:.3f} s for Ray and {info['actorhub']['mean']:.3f} s"
            " for actorhub.",
        ]
    return "\n".join(lines) + "\n"


def run_cross_node() -> str:
    """A third section: cross_node_transfer.py's lines, as it printed them."""
    done = subprocess.run([sys.executable, str(CROSS_NODE)], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"cross_node_transfer.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    lines = [
        "",
        "## Objects between nodes",
        "",
        "`tests/perf/cross_node_transfer.py`: a driver gets an array that an actor on another node made;",
        "its node pulls it from the other node's store in 8 MiB chunks, then maps it. Median +- stdev.",
        "",
        "```",
        *[line for line in done.stdout.splitlines() if line.strip()],
        "```",
    ]
    return "\n".join(lines) + "\n"


def run_gateway() -> str:
    """A fourth section: calls per second through the gateway (gateway_bench.py, issue 14)."""
    done = subprocess.run([sys.executable, str(GATEWAY), "--json"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"gateway_bench.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    rows = json.loads(done.stdout)
    lines = [
        "",
        "## Calls through the gateway",
        "",
        "`tests/perf/gateway_bench.py`: concurrent clients on this machine call a typed actor's trivial",
        "method through `actorhub serve-gateway` (JSON parsed and validated, the actor called, JSON back).",
        "Ray has no counterpart.",
        "",
        "| protocol | clients | calls /s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        *[f"| {r['protocol']} | {r['clients']} | {r['calls_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
          for r in rows],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filter", default="", help="only metrics whose name contains TEXT (vs-ray's pattern)")
    parser.add_argument("--from-output", type=Path, help="vs-ray output saved earlier, instead of a new run")
    parser.add_argument("--note", default="", help="how the numbers were taken, when not by one plain run")
    parser.add_argument("--own-metrics", action="store_true", help="add the table of actorhub's own metrics vs Ray")
    parser.add_argument("--own-metrics-rounds", type=int, default=1, metavar="N", help="own_metrics_vs_ray.py --rounds")
    parser.add_argument(
        "--own-metrics-from", type=Path, metavar="FILE", help="own_metrics_vs_ray.py --json output saved earlier"
    )
    parser.add_argument("--cross-node", action="store_true", help="add cross_node_transfer.py's figures")
    parser.add_argument("--gateway", action="store_true", help="add gateway_bench.py's figures")
    args = parser.parse_args(argv)
    output = args.from_output.read_text() if args.from_output else run_vs_ray(args.filter)
    page = render(output, args.filter, args.note)
    if args.own_metrics_from:
        page += render_own(json.loads(args.own_metrics_from.read_text()))
    elif args.own_metrics:
        page += render_own(run_own_metrics(args.own_metrics_rounds))
    if args.cross_node:
        page += run_cross_node()
    if args.gateway:
        page += run_gateway()
    (ROOT / "BENCHMARKS.md").write_text(page)
    print(f"wrote {ROOT / 'BENCHMARKS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
