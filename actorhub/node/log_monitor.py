"""The node's log monitor: tails its workers' output files and publishes their lines to the hub.

One thread per node agent. Every `period_s` (100 ms) it lists the session's `logs/` directory,
starts following each new `worker-*.out|err` file whose first line names this node (two node
agents on one host may share a session directory), reads what each file gained
(`log_files.LogFileTail`: one stat per file, a read only when it grew) and sends it all to the
hub in one `PublishLogs` batch, which the hub passes to the drivers of each line's job.

Lines are published whether or not a driver listens: the hub drops what nobody subscribed
to, and the files keep everything. A batch the hub does not take (away, restarting) is
dropped, not retried: logs at the driver are best effort, as in Ray. A file whose worker has
exited is read to its end once more and then forgotten.

Nothing here touches a worker or the call path: workers only write their files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from actorhub.cluster.lifetime import process_alive
from actorhub.exceptions import RpcFailedError
from actorhub.node.log_files import LogFileTail
from actorhub.wire.records import LogLines

log = logging.getLogger(__name__)

# A batch carries at most about this much; the rest goes in the next one.
MAX_BATCH_BYTES = 4 << 20

Publish = Callable[[Sequence[LogLines]], None]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not known yet: the worker has not written its markers
    return process_alive(pid)


class LogMonitor:
    def __init__(self, logs_dir: Path, node_id: str, publish: Publish, period_s: float = 0.1) -> None:
        self._logs_dir = logs_dir
        self._node_id = node_id
        self._publish = publish
        self._period_s = period_s
        self._tails: dict[str, LogFileTail] = {}
        self._done: set[str] = set()  # files of other nodes, of exited workers, or not workers'
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-monitor", daemon=True)
        self._failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after one last pass (what exited workers wrote last still goes out)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self._period_s)
            try:
                self.poll_once()
            except Exception:  # a bug here must not end the node's logs for good
                log.exception("the log monitor's pass failed")
            if stopping:
                return

    def poll_once(self) -> None:
        """One pass: find new files, read what grew, publish it."""
        self._discover()
        chunks: list[LogLines] = []
        size = 0
        for name, tail in list(self._tails.items()):
            if size >= MAX_BATCH_BYTES:
                break
            gone = not _alive(tail.attribution.pid)
            if not (tail.unread() or tail.waiting or gone):
                continue
            read = tail.read(MAX_BATCH_BYTES - size, final=gone)
            if tail.foreign or (tail.attribution.node_id and tail.attribution.node_id != self._node_id):
                self._forget(name)  # not one of this node's workers: its own node sends it
                continue
            for chunk in read:
                chunks.append(chunk)
                size += sum(len(line) for line in chunk.lines)
            if gone and not tail.unread():
                self._forget(name)
        if chunks:
            self._send([c for c in chunks if c.lines])

    def _discover(self) -> None:
        try:
            entries = os.scandir(self._logs_dir)
        except OSError:
            return
        with entries:
            for entry in entries:
                name = entry.name
                if name in self._tails or name in self._done:
                    continue
                tail = LogFileTail.of(Path(entry.path))
                if tail is not None:
                    self._tails[name] = tail
                else:
                    self._done.add(name)

    def _forget(self, name: str) -> None:
        self._tails.pop(name, None)
        self._done.add(name)

    def _send(self, chunks: list[LogLines]) -> None:
        if not chunks:
            return
        try:
            self._publish(chunks)
        except RpcFailedError as e:
            self._failures += 1
            # Once per outage, not per batch: a hub that is away for a minute is 600 batches.
            if self._failures == 1:
                log.warning("publishing workers' output to the hub failed (%s); lines are dropped until it "
                            "answers again (the files keep them)", e)
            return
        if self._failures:
            log.info("publishing workers' output works again (%d batches were dropped)", self._failures)
            self._failures = 0
