"""Which dashboard a `JobSubmissionClient` (and `actorhub job`) talks to, and with which token.

The address, in Ray's order: the one given; else ACTORHUB_API_SERVER_ADDRESS (or Ray's
RAY_API_SERVER_ADDRESS); else ACTORHUB_ADDRESS (or RAY_ADDRESS); else the newest cluster running
on this machine. An `http://` or `https://` address is the dashboard itself; "auto", or a hub's
HOST:PORT (what `init()` takes), is a cluster of this machine, whose session says where its
dashboard listens. The token, unless the caller's headers carry an Authorization: ACTORHUB_TOKEN
(or ACTORHUB_TOKEN_FILE), else the token of this machine's session for that cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from actorhub.cluster import discovery
from actorhub.cluster.credentials import given_token
from actorhub.cluster.launcher import DASHBOARD_ADDRESS_FILE
from actorhub.cluster.session import Session, list_sessions, session_for_address
from actorhub.config import Config
from actorhub.exceptions import JobSubmissionError

API_ADDRESS_VARIABLES = ("ACTORHUB_API_SERVER_ADDRESS", "RAY_API_SERVER_ADDRESS")


@dataclass(frozen=True)
class Dashboard:
    url: str
    """http://HOST:PORT, without a trailing slash."""
    token: str | None
    """None: no token found (the caller's headers may carry one)."""


def _dashboard_of(session: Session) -> str | None:
    try:
        address = (session.path / DASHBOARD_ADDRESS_FILE).read_text().strip()
    except OSError:
        return None
    return f"http://{address}" if address else None


def _local(config: Config, what: str) -> tuple[str, Session]:
    found = discovery.find(config, "auto", {})
    assert found is not None  # "auto" raises NoClusterError rather than return None
    session = found.session
    url = _dashboard_of(session) if session is not None else None
    if session is None or url is None:
        raise JobSubmissionError(f"{what}: the cluster at {found.hub_address} runs no dashboard on this machine; start "
                                 "the head with the dashboard (actorhub start --head) or pass its http:// address")
    return url, session


def find_dashboard(address: str | None, environ: Mapping[str, str], config: Config) -> Dashboard:
    what = "the Job API"
    if address is None:
        for name in (*API_ADDRESS_VARIABLES, *discovery.ADDRESS_VARIABLES):
            value = environ.get(name, "").strip()
            if value:
                address, what = value, f"{name}={value}"
                break
    elif not isinstance(address, str):
        raise TypeError(f"address must be a str, not {type(address).__name__}")
    given = given_token(config)
    if address is None or address == "auto":
        url, session = _local(config, what)
        return Dashboard(url, given.token if given is not None else session.token)
    if address.startswith(("http://", "https://")):
        url = address.rstrip("/")
        if given is not None:
            return Dashboard(url, given.token)
        serving = _session_serving(config, url)
        return Dashboard(url, serving.token if serving is not None else None)
    if "://" in address:
        raise JobSubmissionError(f"{what}: {address!r} is neither a dashboard's http:// address nor a cluster's "
                                 "HOST:PORT")
    hub_session = session_for_address(config.session_root, address)
    if hub_session is None:
        raise JobSubmissionError(f"{what}: this machine has no session for the cluster at {address}; pass its "
                                 "dashboard's address, http://HOST:PORT (8265 by default)")
    served = _dashboard_of(hub_session)
    if served is None:
        raise JobSubmissionError(f"{what}: the cluster at {address} runs no dashboard")
    return Dashboard(served, given.token if given is not None else hub_session.token)


def _session_serving(config: Config, url: str) -> Session | None:
    """This machine's session whose dashboard listens at `url`, for its token."""
    target = urlsplit(url).netloc
    for session in reversed(list_sessions(config.session_root)[0]):
        served = _dashboard_of(session)
        if served is not None and urlsplit(served).netloc == target:
            return session
    return None
