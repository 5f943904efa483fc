"""Simulated hosts on this machine, for tests and benchmarks of clusters that span hosts.

Each host is a Linux network namespace `actorhub-t<pid>-<n>-h<i>` with loopback and one veth
into a bridge that lives in a namespace of its own (`actorhub-t<pid>-<n>-sw`): the root
namespace's interfaces, routes and addresses are never touched, and traffic goes only between
these hosts (or to their own loopback). Network n's hosts have 10.213.n.1, 10.213.n.2, ...:
a test-only subnet that exists only inside the namespaces.

A host also has its own /dev/shm, hostname, TMPDIR and HOME, so that nothing is shared but the
network, as between real machines. The tmpfs on /dev/shm is mounted in a private mount
namespace held by an anchor process (`sleep infinity`); every process of the host enters the
anchor's network, mount and UTS namespaces with nsenter. One mount namespace per host, not one
per command as `ip netns exec` makes: a driver must see the arena of its host's node agent.

Teardown SIGKILLs every process in the host's namespace (`ip netns pids`), which ends the
mount namespace and so its tmpfs (the arenas), then deletes the namespaces; the veths go with
them. Everything needs root, `ip` (iproute2), `unshare` and `nsenter` (util-linux):
`unavailable_reason()` says what is missing, for a skip.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SUBNET = "10.213"
RESULT = "RESULT "  # the line prefix a driver script reports its result with (`report(value)`)
CLI = [sys.executable, "-m", "actorhub.cli"]

# Variables of the test process that must not leak into a host: each host finds its own
# cluster, token and session root, as a process on another machine would.
_PRIVATE_ENV = ("ACTORHUB_", "RAY_")

_networks = itertools.count()
_probe: list[str | None] = []


class HostCommandError(AssertionError):
    """A command on a simulated host failed; the message holds its output."""


def netns_prefix(pid: int | None = None) -> str:
    """The prefix of every namespace the process `pid` (this one by default) makes."""
    return f"actorhub-t{os.getpid() if pid is None else pid}-"


def live_namespaces() -> set[str]:
    """The names of this process's simulated hosts' namespaces that exist now."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return set()
    return {name for name in names if name.startswith(netns_prefix())}


def remove_namespace(name: str) -> None:
    """SIGKILL every process in the namespace `name` and delete it (a leftover's cleanup)."""
    for _ in range(100):
        pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split() if p.isdigit()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _ip("netns", "del", name, check=False)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise HostCommandError(f"ip {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def unavailable_reason() -> str | None:
    """Why hosts cannot be simulated here (a skip reason), or None when they can."""
    if not _probe:
        _probe.append(_find_unavailable_reason())
    return _probe[0]


def _find_unavailable_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "simulated hosts need Linux network namespaces"
    if os.geteuid() != 0:
        return "simulated hosts need root (network namespaces, veths, tmpfs mounts)"
    missing = [tool for tool in ("ip", "unshare", "nsenter", "mount") if shutil.which(tool) is None]
    if missing:
        return f"simulated hosts need {', '.join(missing)} (iproute2, util-linux); not found on PATH"
    # Tools present is not enough: a container may refuse namespaces (no CAP_SYS_ADMIN).
    name = f"{netns_prefix()}probe"
    out = _ip("netns", "add", name, check=False)
    if out.returncode != 0:
        return f"`ip netns add` is refused here: {out.stderr.strip()}"
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", name, "unshare", "--mount", "--uts", "--propagation", "private",
             "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm && hostname probe"],
            capture_output=True, text=True, timeout=30,
        )
        if done.returncode != 0:
            return f"a private /dev/shm cannot be mounted in a namespace here: {done.stderr.strip()}"
    finally:
        _ip("netns", "del", name, check=False)
    return None


@dataclass
class Host:
    """One simulated machine: its namespaces, address, directories and the processes run there."""

    name: str
    netns: str
    ip: str
    root: Path
    anchor: subprocess.Popen[bytes]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def netns_inode(self) -> int:
        """The inode of the host's network namespace: `os.stat(f"/proc/{pid}/ns/net").st_ino` of
        every process on this host."""
        return os.stat(f"/run/netns/{self.netns}").st_ino

    def runs(self, pid: int) -> bool:
        """Whether the process `pid` runs on this host (is in its network namespace)."""
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == self.netns_inode()
        except OSError:
            return False

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV)}
        env.update(TMPDIR=str(self.tmpdir), HOME=str(self.home), PYTHONUNBUFFERED="1")
        env.update(extra or {})
        return env

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as run on this host. nsenter execs it: the process is our child, not a wrapper's.
        Every process on a host is started in a session of its own, so a process group killed
        there (a node agent's, say) can never be the test process's."""
        return ["nsenter", f"--target={self.anchor.pid}", "--net", "--mount", "--uts", f"--wd={REPO}", "--",
                *argv]

    def start(self, argv: Sequence[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process on this host, its output in logs/<log_name>.log."""
        log = self.logs / f"{log_name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.command(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env(env), close_fds=True, start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def log_of(self, log_name: str, lines: int = 40) -> str:
        try:
            text = (self.logs / f"{log_name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def run(self, argv: Sequence[str], timeout: float = 60.0, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run a command on this host to completion (its exit status is the caller's to check)."""
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            env=self.env(env), start_new_session=True,
        )

    def pids(self) -> list[int]:
        out = _ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in out.stdout.split() if p.isdigit()]

    def kill_all(self, timeout: float = 15.0) -> None:
        """SIGKILL every process on this host and wait until none is left (and reap our own)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise HostCommandError(f"processes on host {self.name} ({self.netns}) survive SIGKILL: {pids}")
            time.sleep(0.02)
        for proc in [self.anchor, *self.started]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


class Network:
    """Hosts on one bridge; use as a context manager (its exit removes every host)."""

    def __init__(self, root: Path, shm_size: str = "4g") -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise HostCommandError(reason)
        self.index = next(_networks)
        if self.index > 250:
            raise HostCommandError("too many simulated networks in one process")
        self.root = root
        self.shm_size = shm_size
        self.hosts: list[Host] = []
        self._next_host = itertools.count(1)
        self.switch = f"{netns_prefix()}{self.index}-sw"
        _ip("netns", "add", self.switch)
        try:
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            _ip("netns", "del", self.switch, check=False)
            raise

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str | None = None) -> Host:
        i = next(self._next_host)
        if i > 250:
            raise HostCommandError("too many simulated hosts on one network")
        name = name or f"h{i}"
        netns = f"{netns_prefix()}{self.index}-h{i}"
        ip = f"{SUBNET}.{self.index}.{i}"
        root = self.root / name
        for sub in ("tmp", "home", "logs"):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        _ip("netns", "add", netns)
        try:
            port = f"p{i}"  # the bridge's end, in the switch namespace; the host's end is eth0
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            anchor = self._anchor(netns, name)
        except BaseException:
            _ip("netns", "del", netns, check=False)
            raise
        host = Host(name=name, netns=netns, ip=ip, root=root, anchor=anchor)
        self.hosts.append(host)
        return host

    def _anchor(self, netns: str, name: str) -> subprocess.Popen[bytes]:
        """The process that holds the host's mount and UTS namespaces: its own /dev/shm and name."""
        script = (f"hostname {name} && mount -t tmpfs -o size={self.shm_size},mode=1777 tmpfs /dev/shm "
                  "&& echo ready && exec sleep infinity")
        anchor = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--mount", "--uts", "--propagation", "private",
             "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
        )
        assert anchor.stdout is not None and anchor.stderr is not None
        line = anchor.stdout.readline()  # "ready", or nothing when the script failed
        if line.strip() != b"ready":
            anchor.kill()
            _, err = anchor.communicate(timeout=10)
            raise HostCommandError(f"host {name} could not be set up: {err.decode(errors='replace').strip()}")
        anchor.stdout.close()
        anchor.stderr.close()
        return anchor

    def remove_host(self, host: Host) -> None:
        try:
            host.kill_all()
        finally:
            _ip("netns", "del", host.netns, check=False)
            if host in self.hosts:
                self.hosts.remove(host)

    def close(self) -> None:
        errors: list[BaseException] = []
        for host in list(self.hosts):
            try:
                self.remove_host(host)
            except BaseException as err:  # remove the rest first
                errors.append(err)
        _ip("netns", "del", self.switch, check=False)
        if errors:
            raise errors[0]


# -- clusters across hosts ------------------------------------------------------------------------

_PRELUDE = """\
import json, os, sys, time
import actorhub

ADDRESS = {address!r}
PARAMS = json.loads({params!r})


def report(value):
    print({result!r} + json.dumps(value), flush=True)

"""


def driver_body(address: str, body: str, params: Any = None) -> str:
    """A driver program: the prelude (ADDRESS, PARAMS: `params` through JSON, `report(value)`),
    then `body`."""
    return _PRELUDE.format(address=address, params=json.dumps(params), result=RESULT) + textwrap.dedent(body)


def result_of(out: str) -> Any:
    """The value a driver script reported (its last `report`), or None."""
    lines = [line for line in out.splitlines() if line.startswith(RESULT)]
    return json.loads(lines[-1][len(RESULT):]) if lines else None


@dataclass
class NodeInfo:
    node_id: str
    address: str
    pid: int
    num_cpus: float
    alive: bool

    @property
    def ip(self) -> str:
        return self.address.rpartition(":")[0]


@dataclass
class HostCluster:
    """A cluster started through the CLI across simulated hosts: a head, then nodes that join
    with nothing but the hub's address and the token (ACTORHUB_TOKEN), as between machines."""

    head: Host
    port: int
    token: str
    num_cpus: float = 1.0
    extra_env: dict[str, str] = field(default_factory=dict)
    """Variables for every process of the cluster (e.g. ACTORHUB_OBJECT_STORE_MEMORY)."""
    start_args: tuple[str, ...] = ()
    """Flags added to every `actorhub start` (e.g. --tls-cert ...)."""
    per_host_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Flags added to `actorhub start` on one host, by host name."""
    per_host_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Variables for every process of the cluster on one host (drivers included), by host name."""
    agents: list[tuple[Host, subprocess.Popen[bytes], str]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{self.port}"

    def env(self, host: Host, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What a process of this cluster on `host` runs with (before `host.env` adds its own)."""
        return {"ACTORHUB_TOKEN": self.token, **self.extra_env, **self.per_host_env.get(host.name, {}), **(extra or {})}

    def start_head(self) -> subprocess.Popen[bytes]:
        argv = [*CLI, "start", "--head", "--port", str(self.port), "--node-ip-address", self.head.ip,
                "--num-cpus", f"{self.num_cpus:g}", "--block", *self.start_args,
                *self.per_host_args.get(self.head.name, ())]
        return self._start(self.head, argv, "head")

    def wait_for_head(self, timeout: float = 90.0) -> None:
        """Return once the head's hub serves and its node has registered: `actorhub start --head`
        shows the hub's address only then. A driver started sooner is refused (no hub answers)."""
        deadline = time.monotonic() + timeout
        while "hub address:" not in self.head.log_of("head", 400):
            self.check_agents()
            if time.monotonic() > deadline:
                raise HostCommandError(f"the head on {self.head.name} did not start in {timeout:g} s:\n"
                                       f"{self.head.log_of('head')}")
            time.sleep(0.05)

    def join(self, host: Host, num_cpus: float | None = None) -> subprocess.Popen[bytes]:
        cpus = self.num_cpus if num_cpus is None else num_cpus
        argv = [*CLI, "start", "--address", self.address, "--node-ip-address", host.ip, "--num-cpus", f"{cpus:g}",
                "--block", *self.start_args, *self.per_host_args.get(host.name, ())]
        return self._start(host, argv, f"node-{len(self.agents)}")

    def _start(self, host: Host, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        proc = host.start(argv, log_name, self.env(host))
        self.agents.append((host, proc, log_name))
        return proc

    def forget(self, host: Host) -> None:
        """Stop watching the agents on `host` (about to be killed); the host's teardown ends them."""
        self.agents = [agent for agent in self.agents if agent[0] is not host]

    def check_agents(self) -> None:
        """Fail with its log when an `actorhub start --block` we started has exited."""
        for host, proc, log_name in self.agents:
            if proc.poll() is not None:
                raise HostCommandError(
                    f"`actorhub start` on host {host.name} exited with {proc.returncode}:\n{host.log_of(log_name)}")

    def popen_driver(self, host: Host, body: str, params: Any = None, env: dict[str, str] | None = None,
                     ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            host.command([sys.executable, "-c", driver_body(self.address, body, params)]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=host.env(self.env(host, env)), start_new_session=True,
        )

    def driver(self, host: Host, body: str, params: Any = None, timeout: float = 90.0,
               env: dict[str, str] | None = None, expect_failure: bool = False) -> Any:
        """Run a driver program on `host`; return what it reported (`report(value)`).

        With `expect_failure`, the program must exit non-zero; returns its stderr instead."""
        proc = self.popen_driver(host, body, params, env)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                self.check_agents()
            except HostCommandError:
                proc.kill()
                proc.communicate()
                raise
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
            out, err = proc.communicate()
            raise HostCommandError(f"a driver on host {host.name} did not finish in {timeout:g} s:\n"
                                   f"stdout:\n{out}\nstderr:\n{err[-6000:]}")
        out, err = proc.communicate()
        if expect_failure:
            if proc.returncode == 0:
                raise HostCommandError(f"a driver on host {host.name} succeeded where it must fail:\n{out}\n{err}")
            return err
        if proc.returncode != 0:
            raise HostCommandError(f"a driver on host {host.name} failed ({proc.returncode}):\n"
                                   f"stdout:\n{out}\nstderr:\n{err[-6000:]}")
        return result_of(out)

    def nodes(self, host: Host | None = None) -> list[NodeInfo]:
        """Every node the hub knows (alive or dead), asked from `host` (the head's by default)."""
        listed = self.driver(host or self.head, _LIST_NODES.format(want=0, limit=0))
        return [NodeInfo(**n) for n in listed]

    def wait_for_nodes(self, count: int, timeout: float = 90.0) -> list[NodeInfo]:
        """The alive nodes, once there are `count` of them; fails fast when an agent exits."""
        listed = self.driver(self.head, _LIST_NODES.format(want=count, limit=timeout), timeout=timeout + 30)
        return [NodeInfo(**n) for n in listed if n["alive"]]

    def host_of(self, node: NodeInfo, hosts: Sequence[Host]) -> Host:
        found = [h for h in hosts if h.ip == node.ip]
        if not found:
            raise HostCommandError(f"node {node.node_id} advertises {node.address}, which is no simulated host's")
        return found[0]


_LIST_NODES = """
from actorhub.runtime.runtime import current

WANT = {want}
LIMIT = {limit}
actorhub.init(address=ADDRESS)
deadline = time.monotonic() + LIMIT
while True:
    nodes = current().hub.cluster_status().nodes
    if len([n for n in nodes if n.alive]) >= WANT:
        break
    if time.monotonic() > deadline:
        sys.exit(f"only {{len([n for n in nodes if n.alive])}} of {{WANT}} nodes joined within {{LIMIT}} s: {{nodes}}")
    time.sleep(0.1)
report([dict(node_id=n.node_id, address=n.address, pid=n.pid, num_cpus=n.num_cpus, alive=n.alive) for n in nodes])
"""


def new_token() -> str:
    return secrets.token_hex(32)


def cli_has(flag: str) -> bool:
    """Whether `actorhub start` takes `flag` (features other changes bring)."""
    out = subprocess.run([*CLI, "start", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    return re.search(rf"(^|\s){re.escape(flag)}\b", out.stdout) is not None
