"""Objects for a driver that cannot see its node's arena (issue 10, item 4).

A driver on another host has a node (the hub gives it one) but not that node's shared memory.
Here it runs in a mount namespace of its own with a fresh tmpfs on /dev/shm, so the arena the
node agent made is not there for it, while the network and the processes are shared: the
same situation as a second host, on loopback. It connects with the address and the token
alone (an empty session root: nothing of the cluster's session directory is used) and must
put, get, pass as arguments and get back 100 MB arrays, streamed through the nodes' stores,
and get ObjectLostError for an object whose node died.

Without the mount namespace (`unshare` refused: no root, no CAP_SYS_ADMIN) the tests that
need it are skipped, saying so. Pure parts (the chunking of a segment, a store's incoming
object) are tested without processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import actorhub
from actorhub.cluster.session import Session
from actorhub.object_store import remote as _remote
from actorhub.object_store import shm as _shm
from actorhub.object_store.store import NodeObjectStore
from actorhub.object_store.transfer import BadChunkError, Incoming
from actorhub.runtime.runtime import current

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "actorhub.cli"]
MIB = 1 << 20
# A driver in a private mount namespace: /dev/shm is a fresh, empty tmpfs there. "$0" and "$@"
# carry the interpreter and the script, so nothing needs quoting.
PRIVATE_SHM = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs -o mode=1777 tmpfs /dev/shm && exec "$0" "$@"']


def _private_shm_refusal() -> str:
    """Why a private /dev/shm cannot be had here ("" when it can)."""
    try:
        out = subprocess.run([*PRIVATE_SHM, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare could not run: {e}"
    if out.returncode != 0:
        return f"unshare --mount with a tmpfs on /dev/shm was refused: {out.stderr.strip()[:200]}"
    return ""


needs_private_shm = pytest.mark.skipif(
    bool(refusal := _private_shm_refusal()),
    reason=f"needs a mount namespace to hide /dev/shm from the driver ({refusal})",
)


def _cli(*args: str, timeout: float = 120.0) -> str:
    out = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO
    )
    assert out.returncode == 0, f"actorhub {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture
def head(session_root: Path) -> Iterator[tuple[str, str]]:
    """A cluster from `actorhub start --head`: (its hub address, its token)."""
    out = _cli("start", "--head", "--num-cpus", "2")
    try:
        address = re.search(r"hub address:\s+(\S+)", out)
        session_dir = re.search(r"session dir:\s+(\S+)", out)
        assert address and session_dir, out
        yield address.group(1), Session(Path(session_dir.group(1))).token
    finally:
        subprocess.run([*CLI, "stop"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)


def run_private_driver(tmp_path: Path, address: str, token: str, body: str) -> str:
    """Run PRELUDE then `body` as a driver whose /dev/shm is private, connected by address and
    token only; it must succeed. Returns its stdout."""
    script = tmp_path / "driver.py"
    script.write_text(f"ADDRESS = {address!r}\n" + PRELUDE + textwrap.dedent(body))
    elsewhere = tmp_path / "driver-sessions"  # no session of the cluster's here
    elsewhere.mkdir(mode=0o700)
    env = {**os.environ, "ACTORHUB_TOKEN": token, "ACTORHUB_SESSION_ROOT": str(elsewhere)}
    env.pop("ACTORHUB_ADDRESS", None)
    out = subprocess.run(
        [*PRIVATE_SHM, sys.executable, str(script)], capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL, env=env, cwd=REPO,
    )
    assert out.returncode == 0, f"driver failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


# What every driver below starts with: numpy, a 100 MB array, and a check that this process
# really cannot see its node's arena.
PRELUDE = """
import os, signal, time
from pathlib import Path
import numpy as np
import actorhub
from actorhub.exceptions import ObjectLostError
from actorhub.runtime.runtime import current

assert not any(p.name.startswith("actorhub-") for p in Path("/dev/shm").iterdir()), "the arena is visible"
actorhub.init(address=ADDRESS)
rt = current()
a = np.arange(100 * (1 << 20) // 8, dtype=np.int64)  # 100 MB
"""


@needs_private_shm
def test_a_driver_that_cannot_see_the_arena_streams_objects(head: tuple[str, str], tmp_path: Path) -> None:
    address, token = head
    out = run_private_driver(tmp_path, address, token, """
    # put and get: streamed to the node's store and back, as a value of the store (not inline)
    start = time.perf_counter()
    ref = actorhub.put(a)
    put_s = time.perf_counter() - start
    assert rt.store_client().remote, "the driver should not see the node's arena"
    store_id = rt.objects.store_id_of(ref.hex())
    assert store_id in {o.object_id for o in rt.store_client().list().objects}
    start = time.perf_counter()
    b = actorhub.get(ref)
    get_s = time.perf_counter() - start
    assert np.array_equal(a, b) and not b.flags.writeable
    print(f"THROUGHPUT put {100 / put_s:.0f} MiB/s ({put_s * 1000:.0f} ms), "
          f"get {100 / get_s:.0f} MiB/s ({get_s * 1000:.0f} ms)")
    del b

    @actorhub.remote
    def total(x):
        return int(x.sum())

    @actorhub.remote
    def doubled(x):
        return x * 2

    expected = int(a.sum())
    assert actorhub.get(total.remote(a)) == expected  # a large argument, staged by the driver
    assert actorhub.get(total.remote(ref)) == expected  # a ref to the driver's put
    assert np.array_equal(actorhub.get(doubled.remote(ref)), a * 2)  # a large result, streamed back

    @actorhub.remote
    class Keeper:
        def keep(self, x):
            self.x = x
            return int(x[-1])

        def plus_one(self):
            return self.x + 1

    keeper = Keeper.remote()
    assert actorhub.get(keeper.keep.remote(a)) == a[-1]
    assert np.array_equal(actorhub.get(keeper.plus_one.remote()), a + 1)

    # Small values are unaffected: inline, never in the store.
    small = actorhub.put(np.arange(10))
    assert not rt.objects.store_id_of(small.hex()) and actorhub.get(small).sum() == 45

    # The driver's freed object leaves the node's store.
    del ref
    deadline = time.monotonic() + 10
    while store_id in {o.object_id for o in rt.store_client().list().objects}:
        assert time.monotonic() < deadline, "the freed put stayed in the node's store"
        time.sleep(0.1)
    actorhub.kill(keeper)
    actorhub.shutdown()
    print("DONE")
    """)
    assert "DONE" in out, out
    print(next(line for line in out.splitlines() if line.startswith("THROUGHPUT")))


@needs_private_shm
def test_objects_cross_nodes_and_one_whose_node_died_is_lost(head: tuple[str, str], tmp_path: Path) -> None:
    address, token = head
    _cli("start", "--address", address, "--num-cpus", "1")
    out = run_private_driver(tmp_path, address, token, """
    from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    other = next(n for n in rt.hub.cluster_status().nodes if n.alive and n.node_id != rt.node_id)

    @actorhub.remote
    class Maker:
        def make(self, n, fill):
            return np.full(n, fill, dtype=np.int64)

        def total(self, x):
            return int(x.sum())

    maker = Maker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(other.node_id)).remote()
    ref = actorhub.put(a)  # in the driver's node's store: the other node pulls it from there
    assert actorhub.get(maker.total.remote(ref)) == int(a.sum())
    n = len(a)
    start = time.perf_counter()
    made = actorhub.get(maker.make.remote(n, 7))  # stored on the other node, streamed from there
    print(f"THROUGHPUT get from another node {100 / (time.perf_counter() - start):.0f} MiB/s (with the call)")
    assert made.shape == (n,) and made[0] == made[-1] == 7
    lost = maker.make.remote(n, 9)
    big = maker.make.remote(8 * n, 5)  # 800 MB: still streaming when its node dies
    ready, _ = actorhub.wait([lost, big], num_returns=2, timeout=120)
    assert len(ready) == 2
    # The node agent holding the only copies dies a moment into the read of the big one.
    import threading
    threading.Timer(0.25, os.kill, (other.pid, signal.SIGKILL)).start()
    for ref, what in ((big, "mid-read"), (lost, "before the read")):
        start = time.perf_counter()
        try:
            actorhub.get(ref, timeout=60)
        except ObjectLostError as e:
            print(f"LOST {what} after {time.perf_counter() - start:.2f} s: {e}")
        else:
            raise AssertionError(f"an object whose node died {what} was read")
        assert time.perf_counter() - start < 30
    actorhub.shutdown()
    print("DONE")
    """)
    assert "DONE" in out and "LOST mid-read" in out and "LOST before the read" in out, out
    print("\n".join(line for line in out.splitlines() if line.startswith(("THROUGHPUT", "LOST"))))


def test_a_driver_on_the_nodes_host_maps_the_arena(cluster: actorhub.ClusterContext) -> None:
    ref = actorhub.put(np.ones(MIB, dtype=np.uint8))
    assert current().store_client().remote is False
    value = actorhub.get(ref)
    assert value.sum() == MIB and not value.flags.writeable


def test_the_chunks_of_a_segment_are_its_bytes(tmp_path: Path) -> None:
    value = {"a": np.arange(1000, dtype=np.float64), "b": b"x" * 5000, "c": np.ones((3, 7), dtype=np.int16)}
    serialized = _shm.serialize(value)
    _shm.write_segment(tmp_path / "segment", serialized)
    whole = (tmp_path / "segment").read_bytes()
    for chunk_bytes in (1, 64, 100, 4096, len(whole) - 1, len(whole), 1 << 20):
        chunks = list(_remote.segment_chunks(serialized, chunk_bytes))
        assert [offset for offset, _ in chunks] == list(range(0, len(whole), chunk_bytes))
        assert all(len(data) == chunk_bytes for _, data in chunks[:-1])
        assert b"".join(data for _, data in chunks) == whole, chunk_bytes


def test_an_incoming_object_takes_its_chunks_in_order_or_leaves_nothing(tmp_path: Path) -> None:
    store = NodeObjectStore(64 * MIB, tmp_path / "shm", tmp_path / "spill")
    try:
        serialized = _shm.serialize(np.arange(100_000, dtype=np.int64))
        chunks = list(_remote.segment_chunks(serialized, 64 * 1024))
        incoming = Incoming(store, "whole", serialized.total_size, "owner")
        for offset, data in chunks:
            incoming.write(offset, data)
        incoming.finish()
        incoming.abandon()  # after the seal: nothing
        assert np.array_equal(store.read("whole"), np.arange(100_000, dtype=np.int64))

        broken = Incoming(store, "broken", serialized.total_size, "owner")
        broken.write(*chunks[0])
        with pytest.raises(BadChunkError):
            broken.write(*chunks[2])  # one skipped
        with pytest.raises(BadChunkError):
            broken.write(0, b"x" * (serialized.total_size + 1))  # past the end
        with pytest.raises(BadChunkError):
            broken.finish()  # short
        broken.abandon()
        assert "broken" not in store and "whole" in store
    finally:
        store.close()
