"""The session directory: logs, the cluster token (mode 0600) and the hub's address.

`<session_root>/latest` points at the newest session whose hub serves (started by `init()` or
`actorhub start`). A session made by `actorhub start` also holds `started_by` ("head", or "node"
for a node that joined a hub on another host: its session holds that hub's address and the
token it was given), which is how `init()` finds the cluster started on this host
(`cluster/discovery.py`) and not one embedded in another program.

The session root (`$TMPDIR/actorhub-<uid>`) and /dev/shm are places every local user can
create names in. Another user who made our directory first, open to all, could swap in their
own hub address, token or arena bytes, which our drivers would then unpickle. So every
directory (and the token file) is accepted only when it is this user's own and closed to
group and others, both when it is made and when it is read (`check_private`).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from actorhub.exceptions import ActorHubError, UnsafeDirectoryError

TOKEN_FILE = "token"
ADDRESS_FILE = "hub_address"
STARTED_FILE = "started_by"
LATEST = "latest"
SESSION_PREFIX = "session_"


class NoClusterError(ActorHubError, ConnectionError):
    """No running cluster where one was required: address="auto" found none on this machine,
    or the one found (an address file left by a cluster that is gone) does not answer."""


def _refuse(path: Path, what: str, problem: str, fix: str) -> UnsafeDirectoryError:
    return UnsafeDirectoryError(f"refusing the {what} {path}: {problem}; {fix}", path=str(path))


def _check_stat(path: Path, what: str, st: os.stat_result, directory: bool) -> None:
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, what, "it is a symbolic link", "remove it")
    if not (stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)):
        raise _refuse(path, what, f"it is not a {'directory' if directory else 'regular file'}", "remove it")
    if st.st_uid != uid:
        raise _refuse(path, what, f"it is owned by uid {st.st_uid}, not by you (uid {uid})",
                      "remove it (as its owner or root)")
    if st.st_mode & 0o077:
        # No group or other bits: anyone who can write here can change what we read.
        mode = "700" if directory else "600"
        raise _refuse(path, what, f"its mode is {stat.S_IMODE(st.st_mode):04o}, open to other users",
                      f"remove it or run `chmod {mode} {path}`")


def check_private(path: Path, what: str, *, directory: bool = True) -> None:
    """Refuse `path` unless it is this user's own and closed to group and others.

    Raises UnsafeDirectoryError (naming the path, the problem and the fix), or
    FileNotFoundError when there is nothing there. A link is refused, not followed.
    """
    _check_stat(path, what, os.lstat(path), directory)


def check_root(root: Path) -> bool:
    """Check the session root; False when it does not exist (yet).

    The root alone may be a link, if the link is ours (a user may point ACTORHUB_SESSION_ROOT
    at one); then the directory it names is checked. A link that another user put in /tmp
    under our root's name is refused.
    """
    try:
        st = os.lstat(root)
        if stat.S_ISLNK(st.st_mode) and st.st_uid == os.getuid():
            st = os.stat(root)
    except FileNotFoundError:
        return False
    _check_stat(root, "session root", st, directory=True)
    return True


@dataclass(frozen=True)
class Session:
    path: Path

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def token(self) -> str:
        path = self.path / TOKEN_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _refuse(path, "token file", "it is a symbolic link", "remove it") from None
            raise
        with os.fdopen(fd) as f:
            # fstat of what was opened: the file cannot be swapped between the check and the read.
            _check_stat(path, "token file", os.fstat(fd), directory=False)
            return f.read().strip()

    @property
    def hub_address(self) -> str:
        return (self.path / ADDRESS_FILE).read_text().strip()

    def write_hub_address(self, address: str) -> None:
        tmp = self.path / (ADDRESS_FILE + ".tmp")
        tmp.write_text(address + "\n")
        tmp.replace(self.path / ADDRESS_FILE)

    def pid_file(self, role: str) -> Path:
        return self.path / f"{role}.pid"

    @property
    def started_by(self) -> str | None:
        """"head" or "node" for a session made by `actorhub start`; None for one of `init()`."""
        try:
            return (self.path / STARTED_FILE).read_text().strip() or None
        except OSError:
            return None

    @property
    def joined(self) -> bool:
        """A node that joined a hub elsewhere: the hub address is not this session's own."""
        return self.started_by == "node"

    def mark_started(self, role: str) -> None:
        """Record that `actorhub start` made this session ("head" or "node")."""
        (self.path / STARTED_FILE).write_text(role + "\n")


def create_session(root: Path, token: str | None = None) -> Session:
    """A fresh session directory, in a root that is ours and private, holding `token` (a new
    random one when None)."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        pass  # a file or a link to nowhere: check_root refuses it below, by name
    check_root(root)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    # Made here, exclusively (no exist_ok) and 0700, so it needs no check after.
    path = root / f"{SESSION_PREFIX}{stamp}_{os.getpid()}_{secrets.token_hex(3)}"
    path.mkdir(mode=0o700)
    (path / "logs").mkdir()
    fd = os.open(path / TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token if token is not None else secrets.token_hex(32))
    return Session(path)


def make_latest(session: Session) -> None:
    """Point `latest` at `session`; done once its hub serves, so "auto" never finds a dead one."""
    root = session.path.parent
    tmp_link = root / f".{LATEST}.{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(session.path.name)
    tmp_link.replace(root / LATEST)


def latest_session(root: Path) -> Session:
    """The session `latest` names: a checked session directory directly inside `root`."""
    missing = NoClusterError(
        f"address='auto' found no running cluster under {root}; "
        "start one with `actorhub start --head` or call init() without an address"
    )
    if not check_root(root):
        raise missing
    link = root / LATEST
    try:
        target = os.readlink(link)
    except OSError:  # no link (or not a link): no cluster started here
        raise missing from None
    path = Path(target) if os.path.isabs(target) else root / target
    if path.parent != root or not path.name.startswith(SESSION_PREFIX):
        raise _refuse(link, "link", f"it points at {target}, not at a session directory in {root}",
                      "remove it")
    try:
        check_private(path, "session directory")
    except FileNotFoundError:
        raise missing from None
    if not (path / ADDRESS_FILE).exists():
        raise missing
    return Session(path)


def session_for_address(root: Path, address: str) -> Session | None:
    """The local session whose hub listens on `address`, if this machine has it."""
    if not check_root(root):
        return None
    for path in sorted(root.glob(f"{SESSION_PREFIX}*"), reverse=True):
        try:
            if (path / ADDRESS_FILE).read_text().strip() != address:
                continue
        except OSError:
            continue
        check_private(path, "session directory")
        return Session(path)
    return None


def started_sessions(root: Path) -> list[Session]:
    """Sessions made by `actorhub start` that have a hub address, newest start first.

    Only the check of the root raises; a session that fails its own check is left out here
    and refused by name when it is used.
    """
    # init() runs this on every call and a host keeps every session it ever had: one stat per
    # session first, and the ownership check only for the few that `actorhub start` made.
    if not check_root(root):
        return []
    found: list[tuple[int, Session]] = []
    with os.scandir(root) as entries:
        paths = [root / e.name for e in entries if e.name.startswith(SESSION_PREFIX)]
    for path in paths:
        try:
            started_ns = (path / STARTED_FILE).stat().st_mtime_ns
        except OSError:
            continue
        if not (path / ADDRESS_FILE).exists():
            continue
        try:
            check_private(path, "session directory")
        except (UnsafeDirectoryError, FileNotFoundError):
            continue
        found.append((started_ns, Session(path)))
    return [session for _, session in sorted(found, key=lambda pair: pair[0], reverse=True)]


def list_sessions(root: Path) -> tuple[list[Session], list[UnsafeDirectoryError]]:
    """The session directories under `root`, oldest first (their names start with the time),
    and the refusals of those that fail the check, which callers report and leave alone."""
    if not check_root(root):
        return [], []
    found: list[Session] = []
    refused: list[UnsafeDirectoryError] = []
    for path in sorted(root.glob(f"{SESSION_PREFIX}*")):
        try:
            check_private(path, "session directory")
        except UnsafeDirectoryError as e:
            refused.append(e)
            continue
        except FileNotFoundError:
            continue
        found.append(Session(path))
    return found, refused
