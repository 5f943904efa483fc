"""The session directory: logs, the cluster token (mode 0600) and the hub's address.

`<session_root>/latest` points at the newest session, which is how `init(address="auto")`
finds the cluster that this machine's latest `init()` or `actorhub start --head` started.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from actorhub.exceptions import ActorHubError

TOKEN_FILE = "token"
ADDRESS_FILE = "hub_address"
LATEST = "latest"


class NoClusterError(ActorHubError, ConnectionError):
    """address="auto" found no running cluster on this machine."""


@dataclass(frozen=True)
class Session:
    path: Path

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def token(self) -> str:
        return (self.path / TOKEN_FILE).read_text().strip()

    @property
    def hub_address(self) -> str:
        return (self.path / ADDRESS_FILE).read_text().strip()

    def write_hub_address(self, address: str) -> None:
        tmp = self.path / (ADDRESS_FILE + ".tmp")
        tmp.write_text(address + "\n")
        tmp.replace(self.path / ADDRESS_FILE)

    def pid_file(self, role: str) -> Path:
        return self.path / f"{role}.pid"


def create_session(root: Path) -> Session:
    """A fresh session directory with a new token."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    path = root / f"session_{stamp}_{os.getpid()}_{secrets.token_hex(3)}"
    path.mkdir(mode=0o700)
    (path / "logs").mkdir()
    fd = os.open(path / TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return Session(path)


def make_latest(session: Session) -> None:
    """Point `latest` at `session`; done once its hub serves, so "auto" never finds a dead one."""
    root = session.path.parent
    tmp_link = root / f".{LATEST}.{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(session.path.name)
    tmp_link.replace(root / LATEST)


def latest_session(root: Path) -> Session:
    link = root / LATEST
    target = link.resolve() if link.is_symlink() else None
    if target is None or not (target / ADDRESS_FILE).exists():
        raise NoClusterError(
            f"address='auto' found no running cluster under {root}; "
            "start one with `actorhub start --head` or call init() without an address"
        )
    return Session(target)


def session_for_address(root: Path, address: str) -> Session | None:
    """The local session whose hub listens on `address`, if this machine has it."""
    if not root.exists():
        return None
    for path in sorted(root.glob("session_*"), reverse=True):
        try:
            if (path / ADDRESS_FILE).read_text().strip() == address:
                return Session(path)
        except OSError:
            continue
    return None
