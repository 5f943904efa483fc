"""The control store: the hub's tables on disk, so that a restarted hub loses nothing.

The hub's memory is the truth while it runs; every decision is also written here, in SQLite
(WAL, `synchronous=FULL`: each commit is fsynced), and a hub starting on an existing store
loads it before it serves. What the store holds: actors (spec with class and arguments, state,
incarnation, restart count, placement, a kill in progress), jobs, nodes, and the counters that
must not repeat across restarts (job ids, node order) plus how many times a hub started on it.

A store that cannot be trusted is refused, never half-loaded: `open_store` raises
`StoreRefusedError` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from actorhub._proto.v1 import common_pb2
from actorhub.exceptions import ActorHubError

STORE_FILE = "control.sqlite3"
SCHEMA_VERSION = 4
# Versions this hub upgrades in place, each by adding what the next one has (nothing removed).
_UPGRADES = {2: "CREATE TABLE placement_groups (group_id TEXT PRIMARY KEY, spec BLOB NOT NULL, state TEXT NOT NULL,"
                " nodes TEXT NOT NULL, version INTEGER NOT NULL)",
             3: "ALTER TABLE placement_groups ADD COLUMN gpu_ids TEXT NOT NULL DEFAULT ''"}

log = logging.getLogger("actorhub.hub")


class StoreRefusedError(ActorHubError):
    """The hub's store is missing, corrupt or from an unknown version; the hub will not start."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        super().__init__(f"refusing the hub's store {path}: {problem}; {fix}")
        self.path = path


@dataclass(frozen=True)
class ActorRow:
    """One actor record as persisted. `version` grows with every change of the record, so a
    write that arrives late never overwrites a newer one."""

    actor_id: str
    spec: common_pb2.ActorSpec
    state: int
    incarnation: int
    num_restarts: int
    node_id: str
    address: str
    death_cause: common_pb2.ErrorInfo | None
    version: int
    worker_id: str = ""
    pid: int = 0
    # A kill(no_restart=True) under way: the worker's exit then ends the actor, not restarts it.
    kill_requested: bool = False
    kill_message: str = ""
    # The spec itself changed since it was written (a dead actor's class and arguments dropped).
    spec_changed: bool = False


@dataclass(frozen=True)
class JobRow:
    job_id: str
    namespace: str
    driver_pid: int
    driver_address: str
    owns_cluster: bool
    alive: bool


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    address: str
    num_cpus: float
    pid: int
    order: int
    generation: int
    alive: bool


@dataclass(frozen=True)
class GroupRow:
    """One placement group (hub/placement_groups.py): its spec, state, and each bundle's node and
    the GPU ids it holds there (which a restarted hub must give to no one else)."""

    group_id: str
    spec: bytes
    state: str
    nodes: tuple[str, ...]
    version: int
    gpu_ids: tuple[tuple[int, ...], ...] = ()


@dataclass
class StoreBatch:
    """What changed, written in one transaction."""

    actors: list[ActorRow] = field(default_factory=list)
    jobs: list[JobRow] = field(default_factory=list)
    nodes: list[NodeRow] = field(default_factory=list)
    # Dead actors the hub no longer remembers (its bounded history).
    forgotten_actors: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    placement_groups: list[GroupRow] = field(default_factory=list)
    # Removed groups the hub no longer remembers.
    forgotten_groups: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.actors or self.jobs or self.nodes or self.forgotten_actors or self.counters
                    or self.placement_groups or self.forgotten_groups)


@dataclass(frozen=True)
class Snapshot:
    """Everything a store holds, as a starting hub loads it. Actors come in creation order."""

    actors: list[ActorRow]
    jobs: list[JobRow]
    nodes: list[NodeRow]
    counters: dict[str, int]
    placement_groups: list[GroupRow] = field(default_factory=list)


# Counter names (the `meta` table).
JOB_COUNTER = "job_counter"
NODE_COUNTER = "node_counter"
HUB_STARTS = "hub_starts"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS actors (
    actor_id TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    state INTEGER NOT NULL,
    incarnation INTEGER NOT NULL,
    num_restarts INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    address TEXT NOT NULL,
    death_cause BLOB,
    version INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    kill_requested INTEGER NOT NULL,
    kill_message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    driver_pid INTEGER NOT NULL,
    driver_address TEXT NOT NULL,
    owns_cluster INTEGER NOT NULL,
    alive INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    num_cpus REAL NOT NULL,
    pid INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    alive INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS placement_groups (
    group_id TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    state TEXT NOT NULL,
    nodes TEXT NOT NULL,
    version INTEGER NOT NULL,
    gpu_ids TEXT NOT NULL DEFAULT ''
);
"""
_TABLES = ("meta", "actors", "jobs", "nodes", "kv", "placement_groups")
# After a failed write: how long before the writer tries again.
_RETRY_WRITE_S = 1.0


def open_store(path: Path, *, must_exist: bool) -> SQLiteControlStore:
    """The store at `path`, created when missing unless `must_exist` (a hub restarting a cluster
    whose state the store holds). Raises StoreRefusedError for a store it cannot trust."""
    if not path.exists():
        if must_exist:
            raise StoreRefusedError(
                path, "it does not exist, and this hub restarts a cluster whose actors it held",
                "put the file back, or stop this cluster (`actorhub stop`) and start a new one")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # It holds pickled classes and arguments: readable by this user only (SQLite gives its
        # -wal and -shm files the same mode).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        return SQLiteControlStore(path)
    except sqlite3.DatabaseError as e:
        raise StoreRefusedError(path, f"it is not a readable SQLite database ({e})",
                                "move it away to start empty, or restore it from a backup") from None


class SQLiteControlStore:
    """One SQLite file, one connection shared under a lock (the writer thread and the loader)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._check_and_create()
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit is on disk before the hub acts on (or answers) the decision.
            self._db.execute("PRAGMA synchronous=FULL")
        except BaseException:
            self._db.close()
            raise
        # Specs carry the pickled class and can be large: write each one once, then only the
        # columns that change.
        self._spec_written: set[str] = set()
        self._closed = False

    def _check_and_create(self) -> None:
        (verdict,) = self._db.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise StoreRefusedError(self.path, f"SQLite's integrity check failed ({verdict})",
                                    "move it away to start empty, or restore it from a backup")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            with _transaction(self._db):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            return
        version = None
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = row[0] if row else None
        while version in _UPGRADES:
            with _transaction(self._db):
                self._db.execute(_UPGRADES[version])
                version += 1
                self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version != SCHEMA_VERSION or not set(_TABLES) <= tables:
            found = "no actorhub schema" if version is None else f"schema version {version}"
            raise StoreRefusedError(self.path, f"it has {found}, and this hub reads version {SCHEMA_VERSION}",
                                    "point --store at a fresh path, or use the actorhub version that wrote it")

    @classmethod
    def in_session(cls, session_dir: Path) -> SQLiteControlStore:
        return open_store(session_dir / STORE_FILE, must_exist=False)

    # -- writing ---------------------------------------------------------------------------------
    def save(self, batch: StoreBatch) -> None:
        if not batch:
            return
        with self._lock:
            if self._closed:
                return
            with _transaction(self._db):
                self._save_actors(batch.actors)
                self._db.executemany(
                    "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?)",
                    [(r.job_id, r.namespace, r.driver_pid, r.driver_address, int(r.owns_cluster), int(r.alive))
                     for r in batch.jobs],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO nodes VALUES (?,?,?,?,?,?,?)",
                    [(n.node_id, n.address, n.num_cpus, n.pid, n.order, n.generation, int(n.alive))
                     for n in batch.nodes],
                )
                self._db.executemany("DELETE FROM actors WHERE actor_id=?", [(a,) for a in batch.forgotten_actors])
                self._spec_written.difference_update(batch.forgotten_actors)
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(batch.counters.items()))
                self._db.executemany(
                    "INSERT INTO placement_groups VALUES (?,?,?,?,?,?) ON CONFLICT(group_id) DO UPDATE"
                    " SET spec=excluded.spec, state=excluded.state, nodes=excluded.nodes, version=excluded.version,"
                    " gpu_ids=excluded.gpu_ids WHERE excluded.version > placement_groups.version",
                    [(g.group_id, g.spec, g.state, "\n".join(g.nodes), g.version,
                      "\n".join(",".join(map(str, ids)) for ids in g.gpu_ids)) for g in batch.placement_groups],
                )
                self._db.executemany("DELETE FROM placement_groups WHERE group_id=?",
                                     [(g,) for g in batch.forgotten_groups])

    def _save_actors(self, rows: Sequence[ActorRow]) -> None:
        for row in rows:
            cause = row.death_cause.SerializeToString() if row.death_cause is not None else None
            changing = (row.state, row.incarnation, row.num_restarts, row.node_id, row.address, cause,
                        row.version, row.worker_id, row.pid, int(row.kill_requested), row.kill_message)
            if row.actor_id in self._spec_written and not row.spec_changed:
                self._db.execute(
                    "UPDATE actors SET state=?, incarnation=?, num_restarts=?, node_id=?, address=?,"
                    " death_cause=?, version=?, worker_id=?, pid=?, kill_requested=?, kill_message=?"
                    " WHERE actor_id=? AND version<?",
                    (*changing, row.actor_id, row.version),
                )
                continue
            self._db.execute(
                "INSERT INTO actors (actor_id, spec, state, incarnation, num_restarts, node_id, address,"
                " death_cause, version, worker_id, pid, kill_requested, kill_message)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(actor_id) DO UPDATE"
                " SET spec=excluded.spec, state=excluded.state, incarnation=excluded.incarnation,"
                " num_restarts=excluded.num_restarts, node_id=excluded.node_id, address=excluded.address,"
                " death_cause=excluded.death_cause, version=excluded.version, worker_id=excluded.worker_id,"
                " pid=excluded.pid, kill_requested=excluded.kill_requested, kill_message=excluded.kill_message"
                " WHERE excluded.version > actors.version",
                (row.actor_id, row.spec.SerializeToString(), *changing),
            )
            self._spec_written.add(row.actor_id)

    # -- reading ---------------------------------------------------------------------------------
    def load(self) -> Snapshot:
        with self._lock:
            actors = self._db.execute(
                "SELECT actor_id, spec, state, incarnation, num_restarts, node_id, address, death_cause,"
                " version, worker_id, pid, kill_requested, kill_message FROM actors ORDER BY rowid"
            ).fetchall()
            jobs = self._db.execute("SELECT * FROM jobs ORDER BY job_id").fetchall()
            nodes = self._db.execute("SELECT * FROM nodes ORDER BY ord").fetchall()
            counters = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            groups = self._db.execute(
                "SELECT group_id, spec, state, nodes, version, gpu_ids FROM placement_groups ORDER BY rowid"
            ).fetchall()
        rows = []
        for actor_id, spec_bytes, state, incarnation, restarts, node_id, address, cause, version, worker_id, \
                pid, kill_requested, kill_message in actors:
            try:
                spec = common_pb2.ActorSpec.FromString(spec_bytes)
                death = common_pb2.ErrorInfo.FromString(cause) if cause is not None else None
            except DecodeError as e:
                raise StoreRefusedError(self.path, f"the record of actor {actor_id} does not parse ({e})",
                                        "move it away to start empty, or restore it from a backup") from None
            self._spec_written.add(actor_id)
            rows.append(ActorRow(actor_id, spec, state, incarnation, restarts, node_id, address, death, version,
                                 worker_id, pid, bool(kill_requested), kill_message))
        return Snapshot(
            actors=rows,
            jobs=[JobRow(j, ns, pid, addr, bool(owns), bool(alive)) for j, ns, pid, addr, owns, alive in jobs],
            nodes=[NodeRow(n, addr, cpus, pid, order, gen, bool(alive)) for n, addr, cpus, pid, order, gen, alive
                   in nodes],
            counters={k: int(v) for k, v in counters.items() if k != "schema_version"},
            placement_groups=[GroupRow(g, bytes(spec), state, tuple(nodes.split("\n")), version,
                                       tuple(tuple(int(i) for i in ids.split(",") if i) for ids in gpus.split("\n")))
                              for g, spec, state, nodes, version, gpus in groups],
        )

    # -- a key-value space for other components --------------------------------------------------
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
    """Writes the hub's changes to the store on one thread of its own.

    The hub's event loop must never wait on the disk. `save` only queues and returns a ticket;
    `when_written(ticket, done)` calls `done` (on the writer's thread) once that batch is
    committed, which is when the hub answers the RPC that made it. Batches queued while a write
    is under way are merged (the newest version of each record), so a slow disk costs fewer,
    larger transactions (one fsync each), not a backlog.
    """

    def __init__(self, store: SQLiteControlStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._queued = StoreBatch()
        self._actors: dict[str, ActorRow] = {}
        self._jobs: dict[str, JobRow] = {}
        self._nodes: dict[str, NodeRow] = {}
        self._groups: dict[str, GroupRow] = {}
        self._queued_ticket = 0
        self._written_ticket = 0
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="hub-store", daemon=True)
        self._thread.start()

    def save(self, batch: StoreBatch) -> int:
        """Queue `batch`; the ticket to wait for (the last one when there is nothing new)."""
        with self._cond:
            if not batch:
                return self._queued_ticket
            for row in batch.actors:
                queued = self._actors.get(row.actor_id)
                if queued is None or queued.version < row.version:
                    self._actors[row.actor_id] = row
            self._jobs.update((j.job_id, j) for j in batch.jobs)
            self._nodes.update((n.node_id, n) for n in batch.nodes)
            self._merge_groups(batch)
            for actor_id in batch.forgotten_actors:
                self._actors.pop(actor_id, None)
                self._queued.forgotten_actors.append(actor_id)
            self._queued.counters.update(batch.counters)
            self._queued_ticket += 1
            self._cond.notify_all()
            return self._queued_ticket

    def _merge_groups(self, batch: StoreBatch) -> None:
        for group in batch.placement_groups:
            queued = self._groups.get(group.group_id)
            if queued is None or queued.version < group.version:
                self._groups[group.group_id] = group
        for group_id in batch.forgotten_groups:
            self._groups.pop(group_id, None)
            self._queued.forgotten_groups.append(group_id)

    def when_written(self, ticket: int, done: Callable[[], None]) -> None:
        """Call `done` once every batch up to `ticket` is committed (or failed and was logged)."""
        with self._cond:
            if ticket <= self._written_ticket:
                call_now = True
            else:
                self._waiters.append((ticket, done))
                call_now = False
        if call_now:
            done()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything saved so far is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._written_ticket >= self._queued_ticket, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread (the store itself stays open)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._written_ticket >= self._queued_ticket and not self._closing:
                    self._cond.wait()
                if self._written_ticket >= self._queued_ticket:
                    return
                batch = self._queued
                batch.actors = list(self._actors.values())
                batch.jobs = list(self._jobs.values())
                batch.nodes = list(self._nodes.values())
                batch.placement_groups = list(self._groups.values())
                self._queued = StoreBatch()
                self._actors, self._jobs, self._nodes, self._groups = {}, {}, {}, {}
                ticket = self._queued_ticket
            failed = False
            try:
                self._store.save(batch)
            except (sqlite3.Error, OSError):
                # Say so loudly and try again shortly (a full disk may get room). Waiters are
                # answered all the same: the hub serves from memory rather than hang every RPC.
                log.exception("could not persist %d actor, %d job and %d node records; retrying",
                              len(batch.actors), len(batch.jobs), len(batch.nodes))
                failed = True
            with self._cond:
                if failed:
                    self._requeue(batch)
                self._written_ticket = ticket
                due = [done for t, done in self._waiters if t <= ticket]
                self._waiters = [(t, done) for t, done in self._waiters if t > ticket]
                self._cond.notify_all()
            for done in due:
                done()
            if failed:
                with self._cond:
                    if self._closing or self._cond.wait_for(lambda: self._closing, _RETRY_WRITE_S):
                        log.error("the hub is stopping with records it could not persist")
                        return

    def _requeue(self, batch: StoreBatch) -> None:
        """Put a failed batch back under what was queued since (which is newer)."""
        for row in batch.actors:
            queued = self._actors.get(row.actor_id)
            if queued is None or queued.version < row.version:
                self._actors[row.actor_id] = row
        for job in batch.jobs:
            self._jobs.setdefault(job.job_id, job)
        for node in batch.nodes:
            self._nodes.setdefault(node.node_id, node)
        for group in batch.placement_groups:
            queued_group = self._groups.get(group.group_id)
            if queued_group is None or queued_group.version < group.version:
                self._groups[group.group_id] = group
        self._queued.forgotten_groups[:0] = batch.forgotten_groups
        self._queued.forgotten_actors[:0] = batch.forgotten_actors
        self._queued.counters = {**batch.counters, **self._queued.counters}
        self._queued_ticket += 1
