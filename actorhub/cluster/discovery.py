"""Which cluster `init()` connects to, in Ray's order.

With no address: ACTORHUB_ADDRESS (or RAY_ADDRESS) when set; else the newest cluster started
on this host with `actorhub start` (a head, or a node that joined a hub elsewhere), never one
that another program's `init()` embeds; else None, which means a new local cluster.
"auto" is the same, except that it also takes the newest cluster of any kind on this host
(`latest`) and raises NoClusterError rather than start one. "local" is always a new cluster.
"HOST:PORT" is that hub, with the token of this host's session for it, else the given one
(ACTORHUB_TOKEN or ACTORHUB_TOKEN_FILE).

A cluster that is found but gone (its address file outlived it) fails at once, by name: for a
session on this host, when none of its hub's processes (or, for a joined node, its node agent)
runs; for a hub elsewhere, when its port refuses connections for `PROBE_TIMEOUT_S`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from actorhub.cluster import addresses
from actorhub.cluster.credentials import TokenError, given_token
from actorhub.cluster.launcher import SUPERVISOR_ROLE, live_roles
from actorhub.cluster.session import (
    ADDRESS_FILE,
    NoClusterError,
    Session,
    latest_session,
    list_sessions,
    session_for_address,
    started_sessions,
)
from actorhub.config import Config

ADDRESS_VARIABLES = ("ACTORHUB_ADDRESS", "RAY_ADDRESS")


@dataclass(frozen=True)
class Found:
    """An existing cluster to connect to."""

    hub_address: str
    token: str
    session: Session | None
    """This host's session for it, if it has one."""
    how: str
    """How it was found, for the line init() prints."""


def find(config: Config, address: str | None, environ: Mapping[str, str]) -> Found | None:
    """The existing cluster `init(address)` connects to, or None for a new local cluster.

    A cluster whose hub and this process disagree on TLS raises TlsMismatchError, naming how."""
    found = _find(config, address, environ)
    if found is not None:
        # Here, not at the top: they import grpc, which the entry points importing this must not.
        from actorhub.wire.tls import load_tls
        from actorhub.wire.tls_probe import check_tls

        host, port = addresses.parse_address(found.hub_address, "the hub's address")
        check_tls(host, port, load_tls(config, check=False))
    return found


def _find(config: Config, address: str | None, environ: Mapping[str, str]) -> Found | None:
    via = ""
    if address is None:
        for name in ADDRESS_VARIABLES:
            value = environ.get(name, "").strip()
            if value:
                address, via = value, name
                break
    if address is None:
        return _started(config)
    if not isinstance(address, str):
        raise addresses.InvalidAddressError(f"init(): address must be a str, not {type(address).__name__}")
    if address == "local":
        return None
    if address == "auto":
        found = _started(config) or _latest(config)
        if found is None:
            raise NoClusterError(
                f"address='auto' found no running cluster under {config.session_root}; start one with "
                "`actorhub start --head`, or call init() without an address for a local one")
        return found
    return _explicit(config, address, via)


def _started(config: Config) -> Found | None:
    sessions = started_sessions(config.session_root)
    if not sessions:
        return None
    session = sessions[0]
    token = session.token  # checked (owner, mode) before anything else is trusted
    hub_address = session.hub_address
    _check_alive(session, hub_address)
    role = "a node joined to it" if session.joined else "its head"
    return Found(hub_address, token, session,
                 f"the cluster started on this host with `actorhub start` ({role}, session {session.path})")


def _latest(config: Config) -> Found | None:
    try:
        session = latest_session(config.session_root)
    except NoClusterError:
        # `latest` names the newest session even when its cluster has come and gone since (a
        # program's own, ended with it); one started before it may still run.
        found = newest_running(config.session_root)
        if found is None:
            return None
        session = found
    token = session.token
    hub_address = session.hub_address
    _check_alive(session, hub_address)
    return Found(hub_address, token, session, f"the newest cluster on this host (session {session.path})")


def newest_running(root: Path) -> Session | None:
    """The newest session under `root` whose cluster runs: its hub (or, while a crashed hub is
    restarted, its supervisor) is alive, or, for a node that joined a hub elsewhere, that node."""
    for session in reversed(list_sessions(root)[0]):
        if not (session.path / ADDRESS_FILE).exists():
            continue
        live = live_roles(session)
        if live & {"hub", SUPERVISOR_ROLE} or (session.joined and any(r.startswith("node-") for r in live)):
            return session
    return None


def _explicit(config: Config, address: str, via: str) -> Found:
    what = via or "address"
    host, port = addresses.parse_address(address, what)
    root = config.session_root
    session = session_for_address(root, address)
    if session is None:
        ip = addresses.resolve(host, f"{what} {address!r}")
        if ip != host:
            session = session_for_address(root, f"{ip}:{port}")
    how = f"{via}={address}" if via else f"address={address!r}"
    if session is not None:
        token = session.token
        _check_alive(session, address)
        return Found(address, token, session, f"{how} (session {session.path})")
    given = given_token(config)
    if given is None:
        raise TokenError(
            f"no token for the cluster at {address}: this host has no session for it; set ACTORHUB_TOKEN (or "
            "ACTORHUB_TOKEN_FILE) to that cluster's token, which `actorhub start --head` printed the file of")
    _probe(address, None)
    return Found(address, given.token, None, f"{how} (token from {given.source})")


def _check_alive(session: Session, hub_address: str) -> None:
    """Raise NoClusterError, naming the address and the session, when the cluster is gone."""
    live = live_roles(session)
    if session.joined:
        if not any(role.startswith("node-") for role in live):
            raise _gone(hub_address, session, "the node agent that joined it from this host no longer runs")
        _probe(hub_address, session)
    elif not live & {"hub", SUPERVISOR_ROLE}:
        raise _gone(hub_address, session, "neither its hub nor the hub's supervisor runs")


def _probe(hub_address: str, session: Session | None) -> None:
    """Fail fast when nothing listens at the hub's address (refused, or no answer), trying again
    for a moment: a hub restarted by its supervisor is back within that."""
    host, port = addresses.parse_address(hub_address, "the hub's address")
    deadline = time.monotonic() + addresses.PROBE_TIMEOUT_S
    while (why := addresses.probe(host, port, max(0.1, deadline - time.monotonic()))) is not None:
        if time.monotonic() >= deadline:
            raise _gone(hub_address, session, f"its hub does not answer ({why})")
        time.sleep(0.1)


def _gone(hub_address: str, session: Session | None, why: str) -> NoClusterError:
    if session is None:
        return NoClusterError(f"no cluster answers at {hub_address}: {why}")
    return NoClusterError(
        f"the cluster at {hub_address} (session {session.path}) is gone: {why}; run `actorhub stop` to clean up "
        "after it, or call init(address='local') for a new cluster")
