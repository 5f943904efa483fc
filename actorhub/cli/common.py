"""What the commands share: finding a cluster, asking its hub, and printing tables."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from actorhub.cluster import addresses
from actorhub.cluster.credentials import given_token
from actorhub.cluster.discovery import newest_running
from actorhub.cluster.session import (
    NoClusterError,
    Session,
    latest_session,
    list_sessions,
    session_for_address,
)
from actorhub.config import Config, RpcDeadlines
from actorhub.exceptions import PeerUnavailableError, RpcDeadlineExceededError, RpcFailedError
from actorhub.wire.hub import HubClient as WireHubClient
from actorhub.wire.node_drain import DrainSummary
from actorhub.wire.records import ActorInfo, ClusterStatus
from actorhub.wire.tls import TlsCredentials, load_tls
from actorhub.wire.transport import ChannelPool

# A hub on this machine answers in milliseconds; longer means it is wedged or gone.
RPC_TIMEOUT_S = 5.0
# How long a command waits for an unreachable hub: its supervisor brings a crashed one back
# within about a second, and longer means it is gone.
HUB_RECONNECT_S = 2.0


class CliError(Exception):
    """A failure the user can act on: main() prints the message as one line and exits 1."""


class HubUnreachableError(CliError):
    """No hub answers at the address (gone, not started yet, or restarting)."""


@dataclass(frozen=True)
class Target:
    """A cluster to talk to: its hub's address, the token it wants, and its local session."""

    address: str
    token: str
    session: Session | None
    tls: TlsCredentials | None = None  # the TLS_* settings of this command, when the cluster uses TLS
    token_source: str = ""
    """Where the token came from when not from `session` ("ACTORHUB_TOKEN", "the token file F")."""


def find_cluster(config: Config, address: str | None) -> Target:
    """The cluster at `address`, or else the latest one started on this machine."""
    if address is None:
        session = _latest_running_session(config.session_root)
        if session is None:
            raise CliError(
                f"no running cluster under {config.session_root}; start one with `actorhub start --head`"
            )
        return Target(session.hub_address, session.token, session, load_tls(config))
    addresses.parse_address(address, "--address")
    found = session_for_address(config.session_root, address)
    if found is not None:
        return Target(address, found.token, found, load_tls(config))
    given = given_token(config)
    if given is not None:
        # A hub on another machine: only its token, given as ACTORHUB_TOKEN or a file, lets us in.
        return Target(address, given.token, None, load_tls(config), given.source)
    raise CliError(
        f"no local session for {address}; to reach a hub on another machine set ACTORHUB_TOKEN (or "
        "ACTORHUB_TOKEN_FILE) to its token"
    )


def _latest_running_session(root: Path) -> Session | None:
    try:
        return latest_session(root)
    except NoClusterError:
        pass
    # `latest` names the newest session even when its start failed or a benchmark's cluster has
    # come and gone since; a cluster started before it may still be running.
    return newest_running(root)


def sessions(root: Path) -> list[Session]:
    """The session directories under `root` that pass the ownership check, oldest first.

    An unsafe root raises UnsafeDirectoryError; `actorhub stop` reports unsafe sessions.
    """
    return list_sessions(root)[0]


def _live_pid_files(session: Session) -> dict[Path, int]:
    live = {}
    for pid_file in session.path.glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            # A pid file outlives a killed process, and its pid may since belong to another program.
            if b"actorhub" in Path(f"/proc/{pid}/cmdline").read_bytes():
                live[pid_file] = pid
        except (OSError, ValueError):
            continue
    return live


def live_pids(session: Session) -> list[int]:
    """The session's processes that are still running."""
    return list(_live_pid_files(session).values())


def processes_naming(session: Session) -> list[int]:
    """Processes whose command line names the session directory (hub, node agent, zygote and
    the workers it forks), pid file or not: one that is starting has not written it yet."""
    needle = os.fsencode(session.path)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


class HubClient:
    """The few hub calls the CLI makes, with failures turned into one-line errors."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.channels = ChannelPool(target.token, tls=target.tls)
        # The CLI answers at once: a short deadline, and no retrying an unreachable node or
        # worker (`memory` asks each). Only the hub is waited for, briefly: it may be restarting.
        self.deadlines = RpcDeadlines(control_s=RPC_TIMEOUT_S, store_s=10.0, owner_s=10.0, unavailable_retry_s=0.0)
        hub_deadlines = self.deadlines.model_copy(update={"unavailable_retry_s": HUB_RECONNECT_S})
        self._hub = WireHubClient(self.channels, target.address, hub_deadlines, reconnect_s=HUB_RECONNECT_S)

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channels.close()

    def status(self) -> ClusterStatus:
        try:
            return self._hub.cluster_status()
        except RpcFailedError as err:
            raise self._error(err) from None

    def list_actors(self, namespace: str | None) -> list[ActorInfo]:
        try:
            return self._hub.list_actors(namespace or "", all_namespaces=namespace is None)
        except RpcFailedError as err:
            raise self._error(err) from None

    def drain_node(self, node_id: str, deadline_s: float) -> DrainSummary:
        """`actorhub drain` (cli/drain.py): returns once the node is removed."""
        try:
            return self._hub.drain_node(node_id, deadline_s)
        except RpcFailedError as err:
            raise self._error(err) from None

    def _live_supervisor(self) -> int | None:
        if self.target.session is None:
            return None
        return _live_pid_files(self.target.session).get(self.target.session.pid_file("hub-supervisor"))

    def _error(self, err: RpcFailedError) -> CliError:
        where = f" (session {self.target.session.path})" if self.target.session is not None else ""
        if isinstance(err, PeerUnavailableError | RpcDeadlineExceededError):
            supervisor = self._live_supervisor()
            if supervisor is not None and self.target.session is not None:
                return CliError(f"the hub at {self.target.address} does not answer, but its supervisor (pid "
                                f"{supervisor}) runs: the hub may be restarting; try again, or see "
                                f"{self.target.session.logs / 'hub-supervisor.log'}")
            return HubUnreachableError(f"no cluster answers at {self.target.address}{where}; is it still running?")
        if err.code == grpc.StatusCode.UNAUTHENTICATED:
            source = f" from {self.target.token_source}" if self.target.token_source else ""
            return CliError(f"the hub at {self.target.address} refused the token{source}{where}: it is not that "
                            "cluster's token")
        name = err.code.name if err.code is not None else "error"
        return CliError(f"the hub at {self.target.address} failed: {name}: {err.details}")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)]
        return "  ".join([*padded, cells[-1]])

    return "\n".join([line(headers), *(line(r) for r in rows)])


def cpus(value: float) -> str:
    return f"{value:g}"


def cpu_count_words(value: float) -> str:
    return f"{value:g} CPU" + ("" if value == 1 else "s")
