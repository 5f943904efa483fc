"""Workers' output at the driver: the lines of this job's actors and tasks, printed as Ray prints them.

`init()` (unless `log_to_driver=False`) starts a `DriverLogs`: a subscription to the job's
output at the hub (`wire/logs.py`) feeds a queue, and one printing thread writes each line to
this process's stdout or stderr (whichever the worker wrote it to) behind its prefix:
`(Counter pid=1234)`, `(my_task pid=1234)`, with `, ip=10.0.0.2` when the worker runs on
another host than the driver, or `, node=<node id>` when it runs on another node of the same
host (two node agents on one machine share its address). Repeated lines are deduplicated as
Ray does (`api/log_dedup.py`). `sys.stdout` and `sys.stderr` are looked up at each write, so
a program (or pytest) that replaces them gets the lines.

Lines travel asynchronously: a node sends what its workers wrote every 100 ms. So that a
program's last lines are not lost when it ends right after its last call, `stop()` waits until
the stream has been quiet for a little longer than that (at most half a second).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from actorhub.api.log_dedup import LogDeduplicator, Printed
from actorhub.cluster.addresses import parse_address
from actorhub.config import Config
from actorhub.runtime.log_markers import line_prefix
from actorhub.wire.logs import HubLogClient, LogSubscription
from actorhub.wire.records import LogLines

if TYPE_CHECKING:
    from actorhub.runtime.runtime import Runtime

# stop(): the stream counts as drained once nothing arrived for this long (the node's period
# and a margin), waiting at most DRAIN_MAX_S.
DRAIN_QUIET_S = 0.15
DRAIN_MAX_S = 0.5
# How often counted repeats are checked for a window that ended, when no line arrives.
EXPIRY_CHECK_S = 0.5

_Batch = tuple[str, str, list[LogLines]]


class DriverLogs:
    def __init__(self, runtime: Runtime, config: Config) -> None:
        self._job_id = runtime.job_id
        self._node_id = runtime.node_id
        self._host = parse_address(runtime.address, "the driver's address")[0]
        dedup = config.dedup_logs
        window = config.dedup_logs_agg_window_s
        allow, skip = config.dedup_logs_allow_regex, config.dedup_logs_skip_regex
        self._dedup = (LogDeduplicator(window, allow, skip), LogDeduplicator(window, allow, skip)) if dedup else None
        self._queue: queue.Queue[_Batch | None] = queue.Queue()
        self._last_batch = 0.0
        client = HubLogClient(runtime.channels, runtime.hub.address, runtime.hub.deadlines, runtime.streams)
        self._subscription = LogSubscription(client, runtime.job_id, self._received, runtime.hub.reconnect_s)
        self._printer = threading.Thread(target=self._print_loop, name="actorhub-log-printer", daemon=True)

    @classmethod
    def start(cls, runtime: Runtime, config: Config) -> DriverLogs:
        logs = cls(runtime, config)
        logs._printer.start()
        logs._subscription.start()
        return logs

    def stop(self) -> None:
        """Print what is still on its way (see the module's docstring), then stop."""
        started = time.monotonic()
        while time.monotonic() - started < DRAIN_MAX_S:
            quiet_for = time.monotonic() - max(self._last_batch, started)
            if quiet_for >= DRAIN_QUIET_S:
                break
            time.sleep(DRAIN_QUIET_S - quiet_for)
        self._subscription.cancel()
        self._queue.put(None)
        self._printer.join(timeout=2.0)

    def _received(self, node_id: str, node_ip: str, chunks: list[LogLines]) -> None:
        self._last_batch = time.monotonic()
        self._queue.put((node_id, node_ip, chunks))

    def _print_loop(self) -> None:
        while True:
            got: _Batch | None = None
            try:
                got = self._queue.get(timeout=EXPIRY_CHECK_S)
                if got is None:
                    break
            except queue.Empty:
                pass
            out: list[Printed] = []
            err: list[Printed] = []
            if got is not None:
                self._lines(*got, out, err)
            if self._dedup is not None:
                out += self._dedup[0].expired()
                err += self._dedup[1].expired()
            _write(sys.stdout, out)
            _write(sys.stderr, err)
        if self._dedup is not None:
            _write(sys.stdout, self._dedup[0].flush())
            _write(sys.stderr, self._dedup[1].flush())

    def _lines(self, node_id: str, node_ip: str, chunks: list[LogLines], out: list[Printed],
               err: list[Printed]) -> None:
        where = self._where(node_id, node_ip)
        for chunk in chunks:
            shown = line_prefix(chunk.name, chunk.pid, where)
            target = err if chunk.is_stderr else out
            if self._dedup is None:
                target += [(shown, line) for line in chunk.lines]
            else:
                target += self._dedup[chunk.is_stderr].feed((node_id, chunk.pid), shown, chunk.lines)

    def _where(self, node_id: str, node_ip: str) -> str:
        if node_ip and node_ip != self._host:
            return f", ip={node_ip}"
        if node_id and node_id != self._node_id:
            return f", node={node_id}"
        return ""


def _write(stream: TextIO | None, lines: list[Printed]) -> None:
    if not lines or stream is None:
        return
    try:
        stream.write("".join(f"{shown} {line}\n" for shown, line in lines))
        stream.flush()
    except (OSError, ValueError):
        pass  # the program closed or replaced its stream: nothing to print to
