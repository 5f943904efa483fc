"""Which cluster init() joins, in Ray's order: ACTORHUB_ADDRESS (RAY_ADDRESS), then the newest
cluster `actorhub start` started on this host, then a new local one; "auto" and "local"; and a
cluster that is gone fails at once, by name."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import gone

import actorhub
from actorhub.cluster.session import NoClusterError, create_session

CLI = [sys.executable, "-m", "actorhub.cli"]
CONNECTING = "Connecting to existing actorhub cluster at address: "
STARTED = "Started a local actorhub cluster"
LIGHT = {"ACTORHUB_PRESTART_WORKERS": "0"}  # these clusters run no actor: no idle workers


def cli(*args: str) -> str:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
                            env={**os.environ, **LIGHT})
    assert result.returncode == 0, f"actorhub {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def connect(init_args: str = "", **env: str | None) -> tuple[str, str]:
    """(address, stderr) of a separate driver program calling init(init_args)."""
    environ = {k: v for k, v in {**os.environ, **LIGHT, **env}.items() if v is not None}
    body = f"""
        import actorhub
        print(actorhub.init({init_args}).address)
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True,
                            timeout=90, stdin=subprocess.DEVNULL, env=environ)
    assert result.returncode == 0, f"driver failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip(), result.stderr


def _address(start_output: str) -> str:
    match = re.search(r"hub address:\s+(\S+)", start_output)
    assert match, start_output
    return match.group(1)


@pytest.fixture
def started(session_root: Path) -> Iterator[list[str]]:
    """Clusters started with `actorhub start --head` (their hub addresses, oldest first)."""
    addresses: list[str] = []
    try:
        yield addresses
    finally:
        cli("stop")


def test_init_prefers_the_environment_then_the_newest_started_cluster(started: list[str]) -> None:
    first = _address(cli("start", "--head", "--num-cpus", "1"))
    second = _address(cli("start", "--head", "--num-cpus", "1"))
    started += [first, second]

    address, err = connect()
    assert address == second, err
    assert f"{CONNECTING}{second}" in err and "actorhub start" in err, err
    assert connect(ACTORHUB_ADDRESS=first)[0] == first
    assert connect(RAY_ADDRESS=first)[0] == first
    assert connect(ACTORHUB_ADDRESS=first, RAY_ADDRESS=second)[0] == first
    assert connect('address="auto"')[0] == second
    address, err = connect('address="local"', ACTORHUB_ADDRESS=first)
    assert address not in (first, second) and STARTED in err, err


def test_init_does_not_join_a_cluster_embedded_in_another_program(cluster: actorhub.ClusterContext) -> None:
    # `cluster` is this test process's own init(): another program's init() starts its own.
    address, err = connect()
    assert address != cluster.address and STARTED in err, err
    # "auto" takes any running cluster on this host, that one included.
    address, err = connect('address="auto"')
    assert address == cluster.address and f"{CONNECTING}{cluster.address}" in err, err


def test_auto_without_a_cluster_raises_no_cluster_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NoClusterError, match="address='auto' found no running cluster"):
        actorhub.init(address="auto")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(NoClusterError):
        actorhub.init()
    assert not actorhub.is_initialized()


def _kill_cluster(session: Path) -> None:
    """SIGKILL every process of a cluster, as a crash of its host would: the supervisor's group
    holds the hub, the node agent's its zygote (workers die with the zygote)."""
    pids = [int(f.read_text()) for f in session.glob("*.pid") if not f.name.startswith("hub.")]
    for pid in pids:
        # A process in another's group (the dashboard's server, in its supervisor's) may be gone already.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_stale_address_file_fails_within_2s_naming_the_address_and_the_session(started: list[str]) -> None:
    out = cli("start", "--head", "--num-cpus", "1")
    address = _address(out)
    match = re.search(r"session dir:\s+(\S+)", out)
    assert match, out
    session = Path(match.group(1))
    _kill_cluster(session)
    assert (session / "hub_address").exists()  # left by the dead hub

    for init_address in (None, "auto", address):
        began = time.monotonic()
        with pytest.raises(NoClusterError) as caught:
            actorhub.init(address=init_address)
        took = time.monotonic() - began
        assert took < 2.0, f"init({init_address!r}) took {took:.2f} s"
        message = str(caught.value)
        assert f"the cluster at {address} (session {session}) is gone" in message, message
        assert "actorhub stop" in message, message
    assert not actorhub.is_initialized()

    # `actorhub stop` sweeps it (the address file with the arena), and then there is none.
    stopped = cli("stop")
    assert f"the address file of its cluster at {address}" in stopped, stopped
    with pytest.raises(NoClusterError, match="found no running cluster"):
        actorhub.init(address="auto")
    assert cli("stop").strip() == "No running cluster."


def test_a_joined_node_that_is_gone_and_a_hub_that_does_not_answer_fail_fast(
    session_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node that joined a hub elsewhere from this host, killed: its session still names the hub.
    joined = create_session(session_root, "a-token")
    joined.mark_started("node")
    joined.write_hub_address("127.0.0.1:1")
    began = time.monotonic()
    with pytest.raises(NoClusterError, match=re.escape(f"(session {joined.path}) is gone: the node agent")):
        actorhub.init()
    assert time.monotonic() - began < 2.0
    shutil.rmtree(joined.path)

    # A hub elsewhere, by address and token, that nothing answers for.
    monkeypatch.setenv("ACTORHUB_TOKEN", "a-token")
    began = time.monotonic()
    with pytest.raises(NoClusterError, match=re.escape("no cluster answers at 127.0.0.1:1")):
        actorhub.init(address="127.0.0.1:1")
    assert time.monotonic() - began < 2.0
    assert not actorhub.is_initialized()
