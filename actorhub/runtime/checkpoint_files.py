"""Checkpoint files: an actor's newest saved state, one file per actor, replaced atomically.

The hub keeps them beside its store (`hub/checkpoint_service.py`); with `checkpoint_dir` set
(a directory every node shares, for large state) workers keep them there themselves. A save is
on disk when it returns: written to a temporary file, fsynced, renamed over the old one, and the
directory fsynced, so a crash at any point leaves the old checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_ACTOR_ID = re.compile(r"^[0-9a-f]{1,64}$")
_SUFFIX = ".ckpt"


class CheckpointFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, actor_id: str) -> Path:
        if not _ACTOR_ID.match(actor_id):  # it names a file: nothing but an actor id's hex digits
            raise ValueError(f"not an actor id: {actor_id!r}")
        return self.directory / f"{actor_id}{_SUFFIX}"

    def save(self, actor_id: str, state: bytes) -> None:
        path = self._path(actor_id)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(state)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def load(self, actor_id: str) -> bytes | None:
        try:
            return self._path(actor_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, actor_id: str) -> None:
        self._path(actor_id).unlink(missing_ok=True)

    def actor_ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return [p.name.removesuffix(_SUFFIX) for p in self.directory.iterdir() if p.name.endswith(_SUFFIX)]
