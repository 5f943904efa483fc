"""Throughput of getting a large numpy array that another node produced (issue 10, item 4).

    python tests/perf/cross_node_transfer.py [--sizes 100,1000] [--rounds 5,3] [--json]
                                             [--loopback]

What: a cluster of two nodes, each on its own simulated host (tests/_hosts.py: a network
namespace with its own /dev/shm, joined to the other by a veth pair through a bridge), or,
where namespaces cannot be made (not root, no iproute2) or with `--loopback`, two node agents
on loopback. An actor on the second node makes an array of each size (MB = 10^6 bytes, int64);
the driver, on the first node's host, waits until the result is ready and then times
`get()`: the first node pulls the object from the second node's store in 8 MiB chunks into
its own, and maps it. Each round makes a new array, so nothing is served from a copy left by
an earlier round; one unmeasured round per size warms both arenas first.

Output: one line per size, `cross-node get of a 100 MB array (MB/s) <median> +- <stdev>`
(`--json`: one JSON object with every round). The simulated hosts' veths and bridge are
in-kernel, so the figure is the transfer path's own cost (gRPC, chunking, copies), not a
network's bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for _hosts

from _hosts import CLI, REPO, HostCluster, Network, driver_body, new_token, result_of, unavailable_reason

STORE_BYTES = 3 << 30  # each node's store: room for the largest array and its previous round's
SHM_SIZE = "6g"

_MEASURE = """
import statistics
import numpy as np
from actorhub.runtime.runtime import current
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

actorhub.init(address=ADDRESS)
here = current().node_id
deadline = time.monotonic() + 60
while True:
    others = [n for n in current().hub.cluster_status().nodes if n.alive and n.node_id != here]
    if others:
        break
    assert time.monotonic() < deadline, "the second node never joined"
    time.sleep(0.1)


@actorhub.remote
class Producer:
    def make(self, items, fill):
        return np.full(items, fill, dtype=np.int64)


producer = Producer.options(scheduling_strategy=On(others[0].node_id)).remote()
results = {}
for size_mb, rounds in PARAMS:
    items = size_mb * 1_000_000 // 8
    samples = []
    for r in range(rounds + 1):
        ref = producer.make.remote(items, r)
        ready, _ = actorhub.wait([ref], timeout=600)
        assert ready, "the producer did not finish"
        start = time.perf_counter()
        array = actorhub.get(ref, timeout=600)
        elapsed = time.perf_counter() - start
        assert array.nbytes == items * 8 and array[0] == array[-1] == r
        if r:  # the first round warms both arenas
            samples.append(size_mb / elapsed)
        del array, ref
        time.sleep(0.5)  # the owner frees the object, the copy goes: the next round starts clean
    results[size_mb] = samples
report(dict(results=results, producer_node=others[0].address, reader_node=current().node_address))
"""


def measure_on_hosts(params: list[list[int]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="actorhub-xfer-") as root, Network(Path(root), SHM_SIZE) as net:
        first, second = net.add_host(), net.add_host()
        cluster = HostCluster(head=first, port=6379, token=new_token(), num_cpus=1,
                              extra_env={"ACTORHUB_OBJECT_STORE_MEMORY": str(STORE_BYTES)})
        cluster.start_head()
        cluster.wait_for_head()
        cluster.join(second)
        cluster.wait_for_nodes(2)
        out: dict[str, Any] = cluster.driver(first, _MEASURE, params=params, timeout=3600)
        out["setup"] = f"two simulated hosts ({first.ip}, {second.ip}: network namespaces, a veth pair via a bridge)"
        return out


def measure_on_loopback(params: list[list[int]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="actorhub-xfer-") as root:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTORHUB_", "RAY_"))}
        env.update(ACTORHUB_SESSION_ROOT=str(Path(root) / "sessions"), ACTORHUB_OBJECT_STORE_MEMORY=str(STORE_BYTES))

        def run(*args: str, timeout: float = 120) -> str:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
            return done.stdout

        try:
            shown = run(*CLI, "start", "--head", "--num-cpus", "1")
            match = re.search(r"hub address:\s+(\S+)", shown)
            if match is None:
                raise SystemExit(f"`actorhub start --head` did not show the hub's address:\n{shown}")
            hub = match.group(1)
            run(*CLI, "start", "--address", hub, "--num-cpus", "1")
            out = run(sys.executable, "-c", driver_body(hub, _MEASURE, params), timeout=3600)
        finally:
            subprocess.run([*CLI, "stop"], capture_output=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
        result: dict[str, Any] = result_of(out)
        result["setup"] = "two node agents on loopback (no network namespaces here)"
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="array sizes in MB (10^6 bytes), comma-separated")
    parser.add_argument("--rounds", default="5,3", help="measured rounds per size, comma-separated")
    parser.add_argument("--loopback", action="store_true", help="two nodes on loopback, not simulated hosts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rounds = [int(r) for r in args.rounds.split(",")]
    rounds += [rounds[-1]] * (len(sizes) - len(rounds))
    params = [[s, r] for s, r in zip(sizes, rounds, strict=False)]
    reason = "--loopback given" if args.loopback else unavailable_reason()
    started = time.monotonic()
    if reason is None:
        out = measure_on_hosts(params)
    else:
        print(f"no simulated hosts ({reason}): two nodes on loopback", file=sys.stderr)
        out = measure_on_loopback(params)
    out["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"# {out['setup']}; the producer's node at {out['producer_node']}, the reader's at {out['reader_node']}")
    for size, samples in out["results"].items():
        spread = statistics.stdev(samples) if len(samples) > 1 else 0.0
        label = f"{int(size) // 1000} GB" if int(size) % 1000 == 0 else f"{size} MB"
        print(f"cross-node get of a {label} array (MB/s) {statistics.median(samples):.1f} +- {spread:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
