"""Clusters across hosts: a head on one, a node joining from another, a driver on a third.

Hosts are 127.0.0.x addresses with a HOME and TMPDIR each (`_loopback_hosts.py`): nothing is
shared between them but the network and the token the test hands over.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _loopback_hosts import Host, Output, hub_address
from _procs import gone
from _wait import wait_for

from actorhub.cli import main as cli_main
from actorhub.cluster import addresses
from actorhub.config import Config

# NODE ID  ADDRESS  LAST HEARTBEAT  [OTHER RESOURCES]  CPUS  STATE
NODE_ROW = r"(\w+)\s+{ip}:\d+\s+(\d\d:\d\d:\d\d \(\d+s ago\)|never)\s+(?:.*?\s+)?[\d.]+/([\d.]+)\s+(alive|dead)"


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Host, Host, Host]]:
    a, b, c = (Host(name, f"127.0.0.{i}", tmp_path / name) for i, name in ((2, "a"), (3, "b"), (4, "c")))
    try:
        yield a, b, c
    finally:
        for host in (b, c, a):  # nodes that joined first, then the head
            host.stop()


def _node(status: str, ip: str) -> re.Match[str] | None:
    return re.search(NODE_ROW.format(ip=re.escape(ip)), status)


def _session(host: Host) -> Path:
    (session,) = host.session_root.glob("session_*")
    return session


def _processes_naming(path: Path) -> list[int]:
    needle = os.fsencode(path)
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and needle in Path(f"/proc/{entry}/cmdline").read_bytes() and not gone(int(entry)):
                found.append(int(entry))
    return found


def test_a_node_and_a_driver_on_other_hosts_join_over_the_network(hosts: tuple[Host, Host, Host]) -> None:
    a, b, c = hosts
    out = a.ok("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "1")
    address = hub_address(out)
    assert address.startswith("127.0.0.2:"), out
    join = re.search(r"^\s*(actorhub start --address \S+ --token-file \S+)\s*$", out, re.M)
    assert join, out
    token_file = Path(shlex.split(join.group(1))[-1])
    token = token_file.read_text().strip()
    assert token not in out  # where it is, not what it is
    assert f'actorhub.init(address="{address}")' in out

    # The join command, run on B exactly as printed.
    joined = b.ok(*shlex.split(join.group(1))[1:])
    match = re.search(r"Started node (\w+) with .* at (127\.0\.0\.3:\d+), joined to the hub at (\S+)\.", joined)
    assert match and match.group(3) == address, joined
    node_b = match.group(1)
    # B's own session, in B's TMPDIR: the token (private) and the hub's address, nothing of A's.
    session_b = _session(b)
    assert (session_b / "token").read_text() == token
    assert stat.S_IMODE((session_b / "token").stat().st_mode) == 0o600
    assert (session_b / "hub_address").read_text().strip() == address

    # Status, from either host: both nodes with their addresses, alive, and heartbeats.
    def both_beating() -> str | None:
        status = a.ok("status")
        found = [_node(status, ip) for ip in (a.ip, b.ip)]
        return status if all(m and m.group(2) != "never" and m.group(4) == "alive" for m in found) else None

    status = wait_for(both_beating, "both nodes' heartbeats", 20, 0.1)
    row_a, row_b = _node(status, a.ip), _node(status, b.ip)
    assert row_a is not None and row_a.group(3) == "1", status  # the head's --num-cpus
    assert row_b is not None and row_b.group(1) == node_b, status
    from_b = b.ok("status")
    assert f"Cluster at {address}" in from_b and _node(from_b, a.ip) and _node(from_b, b.ip), from_b

    # A driver on C, with only the address and the token: actors and tasks on both nodes,
    # and an actor on B calling one on A.
    result = c.driver(f"""
        import actorhub
        from actorhub.runtime import current
        from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

        actorhub.init(address="{address}")
        print("driver at", current.runtime_or_none().address)
        nodes = {{n["NodeManagerAddress"]: n["NodeID"] for n in actorhub.nodes() if n["Alive"]}}
        assert sorted(nodes) == ["127.0.0.2", "127.0.0.3"], nodes

        @actorhub.remote
        class Where:
            def node(self):
                return actorhub.get_runtime_context().get_node_id()
            def echo(self, x):
                return x
            def ask(self, other, x):
                return actorhub.get(other.echo.remote(x))

        @actorhub.remote
        def where(x):
            return actorhub.get_runtime_context().get_node_id(), x * 2

        actors = {{}}
        for host, node_id in nodes.items():
            actors[host] = actor = Where.options(scheduling_strategy=On(node_id)).remote()
            assert actorhub.get(actor.node.remote(), timeout=60) == node_id
            assert actorhub.get(actor.echo.remote(list(range(10))), timeout=60) == list(range(10))
            task = where.options(scheduling_strategy=On(node_id)).remote(21)
            assert actorhub.get(task, timeout=60) == (node_id, 42)
        assert actorhub.get(actors["127.0.0.3"].ask.remote(actors["127.0.0.2"], "across"), timeout=60) == "across"
        print("ok")
    """, ACTORHUB_TOKEN=token)
    assert "driver at 127.0.0.4:" in result.stdout and "ok" in result.stdout, result.stdout
    assert f"Connecting to existing actorhub cluster at address: {address}" in result.stderr, result.stderr

    # A driver on B without an address finds the cluster through B's session, and runs on B.
    result = b.driver("""
        import actorhub

        ctx = actorhub.init()

        @actorhub.remote
        def here():
            return actorhub.get_runtime_context().get_node_id()

        print(ctx.address, ctx.node_id, actorhub.get(here.remote(), timeout=60))
    """)
    assert result.stdout.split() == [address, node_b, node_b], result
    assert f"Connecting to existing actorhub cluster at address: {address}" in result.stderr

    # `actorhub stop` on B stops B's node only.
    stopped = b.ok("stop")
    assert f"Stopped this machine's node of the cluster at {address}" in stopped, stopped
    wait_for(lambda: (m := _node(a.ok("status"), b.ip)) and m.group(4) == "dead", "the hub to see B's node gone",
             20, 0.1)
    assert not (session_b / "hub_address").exists()
    assert "Stopped the cluster at" in a.ok("stop")


def test_a_wrong_or_missing_token_is_refused(hosts: tuple[Host, Host, Host]) -> None:
    a, b, c = hosts
    token = "a-test-token-0123456789abcdef"
    token_file = a.home / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    out = a.ok("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "1", "--token-file", str(token_file))
    address = hub_address(out)
    assert f"--token-file {token_file}" in out, out
    assert (_session(a) / "token").read_text() == token  # the head uses the token it was given

    line = b.error("start", "--address", address, ACTORHUB_TOKEN="not-the-token")
    assert f"the hub at {address} refused the token from ACTORHUB_TOKEN" in line, line
    line = b.error("start", "--address", address)
    assert f"no local session for {address} and no token" in line and "--token-file" in line, line
    assert not list(b.session_root.glob("session_*"))  # nothing was made for a refused join

    result = c.python(f"""
        import actorhub
        from actorhub.cluster.credentials import TokenError, TokenRefusedError
        for token in ("not-the-token", None):
            try:
                actorhub.init(address="{address}")
            except (TokenError, TokenRefusedError) as err:
                print(type(err).__name__, "|", err)
            import os
            os.environ.pop("ACTORHUB_TOKEN", None)
    """, ACTORHUB_TOKEN="not-the-token")
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result
    assert lines[0].startswith(f"TokenRefusedError | the hub at {address} refused this driver's token"), lines
    assert lines[1].startswith(f"TokenError | no token for the cluster at {address}"), lines

    # The right one, from the environment this time.
    joined = b.ok("start", "--address", address, "--num-cpus", "1", ACTORHUB_TOKEN=token)
    assert f"joined to the hub at {address}" in joined


def test_block_stays_in_the_foreground_and_sigterm_stops_everything(hosts: tuple[Host, Host, Host]) -> None:
    a, b, _ = hosts
    head = a.popen("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "1", "--block")
    node: subprocess.Popen[str] | None = None
    try:
        head_out = Output(head)
        address = head_out.wait_for(r"hub address:\s+(\S+)").group(1)
        token_file = head_out.wait_for(r"token file:\s+(\S+)").group(1)
        head_out.wait_for(r"actorhub stop")
        node = b.popen("start", "--address", address, "--token-file", token_file, "--num-cpus", "1", "--block")
        node_out = Output(node)
        node_out.wait_for(r"Started node \w+")
        assert head.poll() is None and node.poll() is None  # both still in the foreground
        session_a, session_b = _session(a), _session(b)
        on_b = wait_for(lambda: _processes_naming(session_b), "B's processes", 10, 0.1)

        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0, node_out.text
        wait_for(lambda: all(gone(p) for p in on_b), "B's processes to end", 15, 0.1)
        wait_for(lambda: (m := _node(a.ok("status"), b.ip)) and m.group(4) == "dead", "B's node to be dead",
                 20, 0.1)

        on_a = _processes_naming(session_a)
        assert on_a
        head.send_signal(signal.SIGINT)  # Ctrl-C stops it as SIGTERM does
        assert head.wait(30) == 0, head_out.text
        wait_for(lambda: all(gone(p) for p in on_a), "A's processes to end", 15, 0.1)
        assert a.ok("stop").strip() == "No running cluster."
        assert b.ok("stop").strip() == "No running cluster."
    finally:
        for proc in (node, head):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_bad_input_is_refused_with_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 session_root: Path) -> None:
    missing, empty, open_file = tmp_path / "missing", tmp_path / "empty", tmp_path / "open"
    empty.write_text("\n")
    empty.chmod(0o600)
    open_file.write_text("a-token\n")
    open_file.chmod(0o644)
    cases = [
        (["start", "--address", "10.0.0.1"], "--address '10.0.0.1': expected HOST:PORT"),
        (["start", "--address", "10.0.0.1:http"], "the port 'http' is not a number"),
        (["start", "--address", "nosuchhost.invalid:6379"], "unknown host 'nosuchhost.invalid'"),
        (["start", "--address", "127.0.0.2:70000"], "port 70000 is out of range (1-65535)"),
        (["start", "--head", "--port", "70000"], "--port: port 70000 is out of range (0-65535)"),
        (["start", "--head", "--node-ip-address", "0.0.0.0"], "the unspecified address cannot be advertised"),
        (["start", "--head", "--node-ip-address", "203.0.113.7"], "203.0.113.7 is not an address of this machine"),
        (["start", "--head", "--node-ip-address", "nosuchhost.invalid"], "unknown host 'nosuchhost.invalid'"),
        (["start", "--head", "--token-file", str(missing)], f"the token file {missing} does not exist"),
        (["start", "--head", "--token-file", str(empty)], f"the token file {empty} is empty"),
        (["start", "--head", "--token-file", str(open_file)], f"chmod 600 {open_file}"),
        (["start", "--address", "127.0.0.2:6379", "--token-file", str(open_file)], "its mode is 0644, open to every"),
        (["status", "--address", "127.0.0.2"], "expected HOST:PORT"),
    ]
    for argv, expected in cases:
        assert cli_main(argv) == 1, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and expected in err, (argv, err)
    assert not list(session_root.glob("session_*"))  # nothing was started or made

    import actorhub
    from actorhub.cluster.addresses import InvalidAddressError

    for address, expected in [
        ("127.0.0.2", "expected HOST:PORT"),
        ("127.0.0.2:99999", "port 99999 is out of range"),
        ("nosuchhost.invalid:1", "unknown host 'nosuchhost.invalid'"),
        ("[::1]:80", "IPv6 addresses are not supported"),
    ]:
        with pytest.raises(InvalidAddressError, match=re.escape(expected)):
            actorhub.init(address=address)
    assert not actorhub.is_initialized()


def test_a_joining_process_advertises_the_address_that_routes_to_the_hub() -> None:
    # Loopback hubs keep loopback; a hub elsewhere gets this host's address on that route.
    assert addresses.node_host(Config(), "127.0.0.5") == "127.0.0.1"
    assert addresses.node_host(Config(node_ip_address="127.0.0.3"), "10.1.2.3") == "127.0.0.3"
    try:
        routed = addresses.route_to("192.0.2.1")
    except addresses.InvalidAddressError:
        pytest.skip("this machine has no route off loopback")
    assert addresses.node_host(Config(), "192.0.2.1") == routed and not routed.startswith("127.")
