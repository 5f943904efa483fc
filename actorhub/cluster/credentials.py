"""The cluster token a process brings from outside: ACTORHUB_TOKEN or a token file.

A head given a token uses it instead of generating one; a node or driver on another host
joins with it. Inside a host the token lives in the session directory (`session.py`), which
every process of the session reads; these are only the ways it gets there.

A token file is read through links (a Kubernetes Secret's files are links) and refused when
it is missing, empty, not a regular file, or open to every user: the token is the cluster's
only credential. A file shared with a group (a Secret mounted with fsGroup and mode 0440) is
accepted.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from actorhub.config import Config, ConfigError
from actorhub.exceptions import AuthenticationError


class TokenError(ConfigError):
    """The cluster token is missing, unreadable or unsafe; the message names its source and the fix."""


class TokenRefusedError(AuthenticationError, PermissionError):
    """A hub refused the token this process brought: it is not that cluster's token."""


@dataclass(frozen=True)
class GivenToken:
    token: str
    source: str
    """Where it came from, for messages: "ACTORHUB_TOKEN" or "the token file PATH"."""
    path: Path | None = None
    """The token file, absolute, when it came from one."""


def check_token(token: str, source: str) -> str:
    """`token` without surrounding whitespace, if it can travel in gRPC metadata."""
    token = token.strip()
    if not token:
        raise TokenError(f"{source} is empty")
    if not all(" " < c <= "~" for c in token):
        raise TokenError(f"{source} holds characters other than printable ASCII (no spaces): not a cluster token")
    return token


def read_token_file(path: Path) -> GivenToken:
    path = Path(os.path.abspath(path.expanduser()))
    source = f"the token file {path}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise TokenError(f"{source} does not exist") from None
    except OSError as err:
        raise TokenError(f"cannot read {source}: {err.strerror or err}") from None
    with os.fdopen(fd) as f:
        # fstat of what was opened: the file cannot be swapped between the check and the read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"{source} is not a regular file")
        if st.st_mode & 0o007:
            raise TokenError(f"refusing {source}: its mode is {stat.S_IMODE(st.st_mode):04o}, open to every user; "
                             f"run `chmod 600 {path}`")
        try:
            text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise TokenError(f"cannot read {source}: {err}") from None
    return GivenToken(check_token(text, source), source, path)


def given_token(config: Config) -> GivenToken | None:
    """The token from ACTORHUB_TOKEN or `token_file`; None when neither is set."""
    from_env = GivenToken(check_token(config.token, "ACTORHUB_TOKEN"), "ACTORHUB_TOKEN") if config.token else None
    from_file = read_token_file(config.token_file) if config.token_file is not None else None
    if from_env is not None and from_file is not None and from_env.token != from_file.token:
        raise TokenError(f"ACTORHUB_TOKEN and {from_file.source} hold different tokens; give only one")
    return from_file or from_env
