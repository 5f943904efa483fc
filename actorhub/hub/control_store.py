"""The control store: where the hub writes its tables through, and a small key-value API.

The hub's memory is the source of truth while it runs; the store is a durable copy so that a
later hub (or an operator with `sqlite3`) can see what the cluster held. Recovery from it is
not implemented yet, so the store is written, never read, on the hub's own paths.
"""

from __future__ import annotations

import abc
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from actorhub._proto.v1 import common_pb2

STORE_FILE = "control.sqlite3"

log = logging.getLogger("actorhub.hub")


@dataclass(frozen=True)
class ActorRow:
    """One actor record as persisted. `version` grows with every change of the record, so a
    write that arrives late (from a slower thread) never overwrites a newer one."""

    actor_id: str
    spec: common_pb2.ActorSpec
    state: int
    incarnation: int
    num_restarts: int
    node_id: str
    address: str
    death_cause: common_pb2.ErrorInfo | None
    version: int


@dataclass(frozen=True)
class JobRow:
    job_id: str
    namespace: str
    driver_pid: int
    driver_address: str
    owns_cluster: bool
    alive: bool


class ControlStore(abc.ABC):
    """Durable copy of the hub's tables plus a key-value space for other components."""

    @abc.abstractmethod
    def save_actors(self, rows: Sequence[ActorRow]) -> None: ...

    @abc.abstractmethod
    def save_jobs(self, rows: Sequence[JobRow]) -> None: ...

    @abc.abstractmethod
    def load_actors(self) -> list[ActorRow]: ...

    @abc.abstractmethod
    def load_jobs(self) -> list[JobRow]: ...

    @abc.abstractmethod
    def kv_put(self, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    def kv_get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    def kv_delete(self, key: str) -> bool:
        """True when the key existed."""

    @abc.abstractmethod
    def kv_list(self, prefix: str = "") -> list[str]:
        """The keys that start with `prefix`, sorted."""

    @abc.abstractmethod
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS actors (
    actor_id TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    state INTEGER NOT NULL,
    incarnation INTEGER NOT NULL,
    num_restarts INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    address TEXT NOT NULL,
    death_cause BLOB,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    driver_pid INTEGER NOT NULL,
    driver_address TEXT NOT NULL,
    owns_cluster INTEGER NOT NULL,
    alive INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


class SQLiteControlStore(ControlStore):
    """One SQLite file in the session directory, one connection shared under a lock.

    WAL with synchronous=NORMAL keeps a commit to a page append (no fsync per write), which is
    what lets the hub persist before replying to CreateActor without slowing it down much.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Specs carry the pickled class and can be large: write each one once, then only the
        # columns that change.
        self._spec_written: set[str] = set()
        self._closed = False

    @classmethod
    def in_session(cls, session_dir: Path) -> SQLiteControlStore:
        return cls(session_dir / STORE_FILE)

    def save_actors(self, rows: Sequence[ActorRow]) -> None:
        if not rows:
            return
        with self._lock:
            if self._closed:
                return
            with _transaction(self._db):
                for row in rows:
                    cause = row.death_cause.SerializeToString() if row.death_cause is not None else None
                    if row.actor_id in self._spec_written:
                        self._db.execute(
                            "UPDATE actors SET state=?, incarnation=?, num_restarts=?, node_id=?,"
                            " address=?, death_cause=?, version=? WHERE actor_id=? AND version<?",
                            (row.state, row.incarnation, row.num_restarts, row.node_id, row.address,
                             cause, row.version, row.actor_id, row.version),
                        )
                        continue
                    self._db.execute(
                        "INSERT INTO actors VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(actor_id) DO UPDATE"
                        " SET spec=excluded.spec, state=excluded.state, incarnation=excluded.incarnation,"
                        " num_restarts=excluded.num_restarts, node_id=excluded.node_id,"
                        " address=excluded.address, death_cause=excluded.death_cause,"
                        " version=excluded.version WHERE excluded.version > actors.version",
                        (row.actor_id, row.spec.SerializeToString(), row.state, row.incarnation,
                         row.num_restarts, row.node_id, row.address, cause, row.version),
                    )
                    self._spec_written.add(row.actor_id)

    def save_jobs(self, rows: Sequence[JobRow]) -> None:
        if not rows:
            return
        with self._lock:
            if self._closed:
                return
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?)",
                    [(r.job_id, r.namespace, r.driver_pid, r.driver_address, int(r.owns_cluster),
                      int(r.alive)) for r in rows],
                )

    def load_actors(self) -> list[ActorRow]:
        with self._lock:
            cursor = self._db.execute(
                "SELECT actor_id, spec, state, incarnation, num_restarts, node_id, address,"
                " death_cause, version FROM actors ORDER BY rowid"
            )
            raw = cursor.fetchall()
        rows = []
        for actor_id, spec_bytes, state, incarnation, restarts, node_id, address, cause, version in raw:
            spec = common_pb2.ActorSpec()
            spec.ParseFromString(spec_bytes)
            death: common_pb2.ErrorInfo | None = None
            if cause is not None:
                death = common_pb2.ErrorInfo()
                death.ParseFromString(cause)
            rows.append(ActorRow(actor_id, spec, state, incarnation, restarts, node_id, address,
                                 death, version))
        return rows

    def load_jobs(self) -> list[JobRow]:
        with self._lock:
            raw = self._db.execute("SELECT * FROM jobs ORDER BY job_id").fetchall()
        return [JobRow(j, ns, pid, addr, bool(owns), bool(alive)) for j, ns, pid, addr, owns, alive in raw]

    def kv_put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def kv_get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def kv_delete(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM kv WHERE key=?", (key,)).rowcount > 0

    def kv_list(self, prefix: str = "") -> list[str]:
        with self._lock:
            # substr, not LIKE: a prefix may contain % or _.
            raw = self._db.execute(
                "SELECT key FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
            ).fetchall()
        return [str(r[0]) for r in raw]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


class _transaction:
    """BEGIN/COMMIT around a batch, ROLLBACK when it raises (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


class StoreWriter:
    """Writes the hub's changed rows to a ControlStore on one thread of its own.

    The hub's event loop must never wait on the disk: a SQLite commit is usually a fraction of a
    millisecond, but a WAL checkpoint syncs the file and can take hundreds. `save` only queues;
    rows queued while a write is under way are merged (the newest version of each actor, the
    last state of each job), so a slow disk costs fewer, larger transactions, not a backlog.
    """

    def __init__(self, store: ControlStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._actors: dict[str, ActorRow] = {}
        self._jobs: dict[str, JobRow] = {}
        self._writing = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="hub-store", daemon=True)
        self._thread.start()

    def save(self, actors: Sequence[ActorRow], jobs: Sequence[JobRow]) -> None:
        if not (actors or jobs):
            return
        with self._cond:
            for row in actors:
                queued = self._actors.get(row.actor_id)
                if queued is None or queued.version < row.version:
                    self._actors[row.actor_id] = row
            for job in jobs:
                self._jobs[job.job_id] = job
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything saved so far is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._actors or self._jobs or self._writing), timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread (the store itself stays open)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._actors or self._jobs or self._closing):
                    self._cond.wait()
                if not (self._actors or self._jobs):
                    return
                actors, self._actors = self._actors, {}
                jobs, self._jobs = self._jobs, {}
                self._writing = True
            try:
                self._store.save_actors(list(actors.values()))
                self._store.save_jobs(list(jobs.values()))
            except (sqlite3.Error, OSError):
                # The store is a copy; losing a write must not fail the cluster's operation.
                log.exception("could not persist %d actor and %d job records", len(actors), len(jobs))
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
