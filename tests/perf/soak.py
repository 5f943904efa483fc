"""A soak of mixed load that checks no cluster process keeps growing (issue 8).

    python tests/perf/soak.py [--minutes 10] [--warmup 30] [--warmup-actors 1100] [--max-growth 10] [--json]

What: for `--minutes`, four driver threads run at once against one cluster:
- calls: sync calls and async batches of 100 to two service actors (one serial, one async);
- churn: actor creations, a call to each, and `actorhub.kill`, in a cycle;
- tasks: batches of small tasks, and tasks that return a 1-4 MiB numpy array;
- objects: puts and gets of small values and of 1-4 MiB numpy arrays (also passed to a
  service actor as arguments), released afterwards.
Once the load has run `--warmup` seconds and churned `--warmup-actors` actors (so caches, pools
and bounded tables are full: the hub keeps the newest 1,000 dead actors' records), the VmRSS
of every cluster process is read from /proc (hub, node agents, zygotes, every worker alive
then, and this driver), and again at the end, with the load still running.

Why: a leak shows as a long-lived process whose memory grows with the work it does. The
report gives each process's start and end RSS and growth, plus what the load did; the exit
code is 1 when a long-lived process (hub, node agent, zygote, driver, the service actors)
grew by more than `--max-growth` percent, 2 when the load itself failed, else 0. Workers that
come and go (churned actors) are counted, not checked; the task system's actors (lease desks,
executors) are reported, not checked. RssAnon and RssShmem are reported too: shared memory
is the node's object-store arena, whose pages a process keeps mapped once touched.

Not part of the test suite: it takes `--minutes` plus the warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import actorhub
from actorhub.api.actor_handle import ActorHandle
from actorhub.runtime import runtime as _runtime
from actorhub.wire.store import NodeStoreClient

Handle = ActorHandle[Any]

MIB = 1 << 20
# Large objects cycle through these sizes (plus a few odd bytes), so the store's allocator
# sees regions of different lengths freed and reused.
LARGE_SIZES = (1 * MIB + 4096, 2 * MIB + 123, 4 * MIB - 8)
ASYNC_BATCH = 100
SYNC_CALLS = 20
TASK_BATCH = 20
# The roles whose growth fails the run: the processes that live the whole soak.
CHECKED_ROLES = ("hub", "node", "zygote", "driver", "service")
WORKLOADS = ("calls", "churn", "tasks", "objects")
WARMUP_CAP_S = 600.0


# ---- the actors and tasks ------------------------------------------------------------------


class Service:
    """Lives the whole run; serial, plain sync methods."""

    def __init__(self) -> None:
        self.calls = 0

    def ping(self) -> int:
        self.calls += 1
        return self.calls

    def nbytes(self, array: Any) -> int:
        return int(array.nbytes)


class AsyncService:
    """Lives the whole run; an async actor."""

    def __init__(self) -> None:
        self.calls = 0

    async def ping(self) -> int:
        self.calls += 1
        return self.calls


class Ephemeral:
    """Created, called once and killed, over and over."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def size(self) -> int:
        return len(self.payload)


def square(x: int) -> int:
    return x * x


def make_array(nbytes: int) -> Any:
    return np.full(nbytes, 7, dtype=np.uint8)


RemoteService = actorhub.remote(Service)
RemoteAsyncService = actorhub.remote(AsyncService)
RemoteEphemeral = actorhub.remote(Ephemeral)
remote_square = actorhub.remote(square)
remote_make_array = actorhub.remote(make_array)


# ---- the load ------------------------------------------------------------------------------


@dataclass
class Counts:
    sync_calls: int = 0
    async_calls: int = 0
    actors_created: int = 0
    actors_killed: int = 0
    tasks: int = 0
    small_puts: int = 0
    large_puts: int = 0
    large_bytes: int = 0


@dataclass
class Load:
    """The driver threads, each looping one workload until `stop` is set.

    Each thread adds only to its own fields of `counts`, so there is no lock.
    """

    services: tuple[Handle, Handle]
    workloads: Sequence[str] = WORKLOADS
    counts: Counts = field(default_factory=Counts)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for name in self.workloads:
            step: Callable[[int], None] = getattr(self, name)
            thread = threading.Thread(target=self._loop, args=(step,), name=f"soak-{step.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self, timeout_s: float = 120.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.errors.append(f"{thread.name} did not stop within {timeout_s:g} s")

    def _loop(self, step: Callable[[int], None]) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                step(i)
                i += 1
        except Exception:
            self.errors.append(traceback.format_exc())
            self.stop.set()

    def calls(self, _: int) -> None:
        for service in self.services:
            for _ in range(SYNC_CALLS):
                actorhub.get(service.ping.remote())
            actorhub.get([service.ping.remote() for _ in range(ASYNC_BATCH)])
        self.counts.sync_calls += SYNC_CALLS * len(self.services)
        self.counts.async_calls += ASYNC_BATCH * len(self.services)

    def churn(self, i: int) -> None:
        actors = [RemoteEphemeral.remote(b"x" * (i % 64)) for _ in range(2)]
        self.counts.actors_created += len(actors)
        actorhub.get([a.size.remote() for a in actors])
        for actor in actors:
            actorhub.kill(actor)
            self.counts.actors_killed += 1

    def tasks(self, i: int) -> None:
        got = actorhub.get([remote_square.remote(n) for n in range(TASK_BATCH)])
        assert got == [n * n for n in range(TASK_BATCH)], got
        nbytes = LARGE_SIZES[i % len(LARGE_SIZES)]
        array = actorhub.get(remote_make_array.remote(nbytes))
        assert array.nbytes == nbytes and array[-1] == 7
        self.counts.tasks += TASK_BATCH + 1
        del array

    def objects(self, i: int) -> None:
        small = [actorhub.put(f"value {i} {n}".encode() * 8) for n in range(10)]
        assert len(actorhub.get(small)) == len(small)
        nbytes = LARGE_SIZES[i % len(LARGE_SIZES)]
        ref = actorhub.put(np.full(nbytes, i % 256, dtype=np.uint8))
        assert actorhub.get(self.services[0].nbytes.remote(ref)) == nbytes
        assert actorhub.get(ref)[0] == i % 256
        self.counts.small_puts += len(small)
        self.counts.large_puts += 1
        self.counts.large_bytes += nbytes
        del small, ref


# ---- finding processes and reading their memory --------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start_ticks: int
    """Field 22 of /proc/PID/stat: with the pid, names one process across samples (no reuse)."""
    cmdline: str


@dataclass(frozen=True)
class Memory:
    rss_kb: int
    anon_kb: int
    shmem_kb: int

    def kb(self, metric: str) -> int:
        """VmRSS ("rss") or RssAnon ("anon")."""
        return self.anon_kb if metric == "anon" else self.rss_kb


@dataclass(frozen=True)
class Sample:
    key: str
    """pid:start_ticks."""
    pid: int
    role: str
    """hub, node, zygote, driver, service, system (lease desks, executors), actor, idle-worker."""
    label: str
    memory: Memory


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None  # gone
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; field 3 is fields[0]
    return Proc(pid=pid, ppid=int(fields[1]), start_ticks=int(fields[19]), cmdline=cmdline.strip())


def all_procs() -> Iterator[Proc]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None:
                yield proc


def read_memory(pid: int) -> Memory | None:
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssShmem"):
                values[name] = int(rest.split()[0])
    except OSError:
        return None
    if "VmRSS" not in values:
        return None  # a zombie
    return Memory(values["VmRSS"], values.get("RssAnon", 0), values.get("RssShmem", 0))


@dataclass(frozen=True)
class Arena:
    """A node's object-store arena: pages ever touched (they stay), and bytes in use now."""

    touched_kb: int
    used_kb: int
    spilled_kb: int


def arenas() -> dict[str, Arena]:
    """node id -> its arena, for the alive nodes on this machine."""
    runtime = _runtime.current()
    out = {}
    for node in runtime.hub.cluster_status().nodes:
        files = list(Path("/dev/shm").glob(f"actorhub-*-{node.node_id}/arena")) if node.alive else []
        if not files:
            continue
        listing = NodeStoreClient(runtime.channels, node.address, runtime.deadlines).list()
        touched = files[0].stat().st_blocks * 512 // 1024
        out[node.node_id] = Arena(touched, listing.used // 1024, listing.spilled // 1024)
    return out


def hub_pid(session_dir: str) -> int | None:
    if not session_dir:
        return None  # a cluster on another machine: its hub is not ours to read
    try:
        return int((Path(session_dir) / "hub.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def cluster_roles(session_dir: str, services: dict[int, str]) -> dict[int, tuple[str, str]]:
    """pid -> (role, label) for every process of the cluster on this machine, and the driver."""
    status = _runtime.current().hub.cluster_status()
    roles: dict[int, tuple[str, str]] = {os.getpid(): ("driver", "driver")}
    hub = hub_pid(session_dir)
    if hub is not None:
        roles[hub] = ("hub", "hub")
    nodes = {n.pid: n.node_id for n in status.nodes if n.alive and n.pid}
    for pid, node_id in nodes.items():
        roles[pid] = ("node", f"node {node_id}")
    actors = {a.pid: a for a in status.actors if a.pid}
    procs = list(all_procs())
    zygotes = {p.pid: nodes[p.ppid] for p in procs if p.ppid in nodes and "zygote" in p.cmdline}
    for pid, node_id in zygotes.items():
        roles[pid] = ("zygote", f"zygote {node_id}")
    for p in procs:
        if p.ppid in zygotes:
            roles[p.pid] = worker_role(p.pid, actors.get(p.pid), services)
    return roles


def worker_role(pid: int, actor: Any, services: dict[int, str]) -> tuple[str, str]:
    if pid in services:
        return "service", services[pid]
    if actor is None:
        return "idle-worker", "idle worker"
    name = f"{actor.class_name} {actor.name}".strip()
    return ("system", name) if actor.namespace == "_actorhub" else ("actor", name)


def sample(session_dir: str, services: dict[int, str]) -> dict[str, Sample]:
    out: dict[str, Sample] = {}
    for pid, (role, label) in cluster_roles(session_dir, services).items():
        proc, memory = read_proc(pid), read_memory(pid)
        if proc is None or memory is None:
            continue  # ended between the listing and the read
        key = f"{pid}:{proc.start_ticks}"
        out[key] = Sample(key=key, pid=pid, role=role, label=label, memory=memory)
    return out


# ---- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    pid: int
    role: str
    label: str
    checked: bool
    start: Memory
    end: Memory
    growth_pct: float
    """Of the checked metric (VmRSS unless --metric anon)."""


@dataclass(frozen=True)
class Passing:
    """Workers in one sample that are not in the other: counted, not checked."""

    at: str
    count: int
    rss_kb: int


@dataclass(frozen=True)
class Report:
    minutes: float
    warmup_s: float
    measured_s: float
    max_growth_pct: float
    metric: str
    counts: Counts
    processes: list[Growth]
    arenas: dict[str, tuple[Arena, Arena]]
    """node id -> (start, end)."""
    passing: list[Passing]
    failures: list[str]
    load_errors: list[str]

    @property
    def exit_code(self) -> int:
        return 2 if self.load_errors else 1 if self.failures else 0


def compare(start: dict[str, Sample], end: dict[str, Sample], metric: str) -> list[Growth]:
    order = {role: i for i, role in enumerate((*CHECKED_ROLES, "system", "actor", "idle-worker"))}
    out = []
    for key in start.keys() & end.keys():
        a, b = start[key], end[key]
        pct = 100.0 * (b.memory.kb(metric) - a.memory.kb(metric)) / max(1, a.memory.kb(metric))
        out.append(Growth(a.pid, a.role, a.label, a.role in CHECKED_ROLES, a.memory, b.memory, pct))
    return sorted(out, key=lambda g: (order.get(g.role, 99), g.label, g.pid))


def passing(start: dict[str, Sample], end: dict[str, Sample]) -> list[Passing]:
    only_start = [s for k, s in start.items() if k not in end]
    only_end = [s for k, s in end.items() if k not in start]
    return [
        Passing(at, len(samples), sum(s.memory.rss_kb for s in samples))
        for at, samples in (("start only", only_start), ("end only", only_end))
    ]


def failures(processes: Sequence[Growth], start: dict[str, Sample], max_growth_pct: float, metric: str) -> list[str]:
    out = [
        f"{g.label} (pid {g.pid}) grew {g.growth_pct:.1f}%: {metric} {g.start.kb(metric)} -> {g.end.kb(metric)} KiB"
        for g in processes
        if g.checked and g.growth_pct > max_growth_pct
    ]
    # A long-lived process found at the start and not at the end died or was replaced.
    lasted = {(g.role, g.label) for g in processes}
    out += [f"{s.label} (pid {s.pid}) was not there at the end" for s in start.values()
            if s.role in CHECKED_ROLES and (s.role, s.label) not in lasted]
    return out


def lines(report: Report) -> list[str]:
    c = report.counts
    out = [
        f"minutes {report.minutes:g}",
        f"warmup_s {report.warmup_s:.0f}",
        f"measured_s {report.measured_s:.0f}",
        f"sync_calls {c.sync_calls}",
        f"async_calls {c.async_calls}",
        f"actors_created {c.actors_created}",
        f"actors_killed {c.actors_killed}",
        f"tasks {c.tasks}",
        f"small_puts {c.small_puts}",
        f"large_puts {c.large_puts}",
        f"large_put_mib {c.large_bytes / MIB:.0f}",
        "",
        f"{'ROLE':<12} {'PROCESS':<28} {'PID':>7} {'START KiB':>10} {'END KiB':>10} {'GROWTH':>8}"
        f" {'ANON KiB':>17} {'SHMEM KiB':>17} CHECKED",
    ]
    for g in report.processes:
        out.append(
            f"{g.role:<12} {g.label[:28]:<28} {g.pid:>7} {g.start.rss_kb:>10} {g.end.rss_kb:>10}"
            f" {g.growth_pct:>7.1f}% {g.start.anon_kb:>8}>{g.end.anon_kb:<8} {g.start.shmem_kb:>8}>{g.end.shmem_kb:<8}"
            f" {'yes' if g.checked else 'no'}"
        )
    out += [
        f"arena {node}: touched {a.touched_kb}>{b.touched_kb} KiB, in use {a.used_kb}>{b.used_kb} KiB,"
        f" spilled {a.spilled_kb}>{b.spilled_kb} KiB"
        for node, (a, b) in report.arenas.items()
    ]
    out += [f"workers {p.at}: {p.count}, {p.rss_kb} KiB RSS in all" for p in report.passing]
    worst = max((g.growth_pct for g in report.processes if g.checked), default=0.0)
    out += ["", f"checked_metric {report.metric}", f"max_growth_pct {worst:.1f}"]
    out += [f"FAIL {f}" for f in report.failures]
    out += [f"LOAD ERROR {e.strip()}" for e in report.load_errors]
    out.append("result " + ("ok" if report.exit_code == 0 else "FAILED"))
    return out


# ---- the run -------------------------------------------------------------------------------


def service_pids(services: Sequence[Handle]) -> dict[int, str]:
    """pid -> label of the service actors, from the hub's list of live actors."""
    ids = {s.actor_id: name for s, name in zip(services, ("Service (serial)", "AsyncService"), strict=True)}
    status = _runtime.current().hub.cluster_status()
    return {a.pid: ids[a.actor_id] for a in status.actors if a.actor_id in ids}


def warm_up(load: Load, seconds: float, actors: int) -> float:
    """Run the load `seconds`, and on until the churn has made `actors` (within WARMUP_CAP_S).

    Returns the seconds it took; returns early when the load fails (its thread sets `stop`).
    """
    log(f"warming up for {seconds:g} s" + (f" and {actors} actors" if "churn" in load.workloads else ""))
    start = time.monotonic()
    load.stop.wait(seconds)
    while "churn" in load.workloads and load.counts.actors_created < actors and not load.stop.is_set():
        if time.monotonic() - start > WARMUP_CAP_S:
            log(f"only {load.counts.actors_created} actors after {WARMUP_CAP_S:g} s of warm-up; sampling now")
            break
        load.stop.wait(1.0)
    return time.monotonic() - start


def soak(args: argparse.Namespace, session_dir: str) -> Report:
    services = (RemoteService.remote(), RemoteAsyncService.remote())
    actorhub.get([s.ping.remote() for s in services])
    labels = service_pids(services)
    load = Load(services, args.workloads)
    load.start()
    try:
        warmup_s = warm_up(load, args.warmup, args.warmup_actors)
        start, start_arenas, t0 = sample(session_dir, labels), arenas(), time.monotonic()
        log(f"sampled {len(start)} processes; soaking for {args.minutes:g} min")
        load.stop.wait(args.minutes * 60.0)
        end, end_arenas, t1 = sample(session_dir, labels), arenas(), time.monotonic()
    finally:
        load.finish()
    processes = compare(start, end, args.metric)
    return Report(
        minutes=args.minutes,
        warmup_s=warmup_s,
        measured_s=t1 - t0,
        max_growth_pct=args.max_growth,
        metric=args.metric,
        counts=load.counts,
        processes=processes,
        arenas={n: (a, end_arenas[n]) for n, a in start_arenas.items() if n in end_arenas},
        passing=passing(start, end),
        failures=failures(processes, start, args.max_growth, args.metric),
        load_errors=load.errors,
    )


def log(message: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def workloads(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {', '.join(WORKLOADS)}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--address", default=None, help="join this cluster (HOST:PORT or auto); default: start one")
    p.add_argument("--minutes", type=float, default=10.0, help="how long to soak after the warm-up (default 10)")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds of load before the first sample (default 30)")
    p.add_argument("--warmup-actors", type=int, default=1100,
                   help="churned actors the warm-up waits for, so the hub's table of the newest 1,000 dead "
                   "actors is full before the first sample (default 1100)")
    p.add_argument("--max-growth", type=float, default=10.0,
                   help="percent of RSS growth a long-lived process may show (default 10)")
    # RssAnon by default: VmRSS also counts the pages of the node's shared arena a process has
    # touched, which grow to the store's high-water mark (reported on the arena line, bounded
    # by object_store_memory) however much the process itself keeps; both are printed.
    p.add_argument("--metric", choices=("rss", "anon"), default="anon",
                   help="what --max-growth applies to: RssAnon (default), the process's own memory, or VmRSS, "
                   "which also counts file pages (shared libraries) and the store's shared arena")
    p.add_argument("--workloads", type=workloads, default=WORKLOADS,
                   help=f"comma-separated, of {','.join(WORKLOADS)} (default all), to find which one grows")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.warmup < 0 or args.warmup_actors < 0 or args.max_growth < 0:
        p.error("--minutes must be positive; --warmup, --warmup-actors and --max-growth not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    context = actorhub.init(address=args.address)
    try:
        report = soak(args, context.session_dir)
    finally:
        actorhub.shutdown()
    if args.json:
        print(json.dumps({**asdict(report), "exit_code": report.exit_code}, indent=2), flush=True)
    else:
        print("\n".join(lines(report)), flush=True)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
