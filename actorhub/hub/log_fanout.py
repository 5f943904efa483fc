"""The hub's log fan-out: batches of worker output from node agents, passed on to the drivers of
their jobs, and kept nowhere.

Each driver that wants its job's output (`log_to_driver`) holds a `SubscribeLogs` stream; a
node agent's `PublishLogs` batch is split by job and each part queued on the streams of that
job (lines with no job yet go to every stream, as Ray shows such lines to every driver). All
of it runs on the hub's event loop and never waits: a stream whose driver does not keep up
has a bounded queue, and what does not fit is dropped and counted, so a slow driver costs the
hub neither memory nor time. A hub restart drops at most the batches in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from actorhub._proto.v1 import hub_pb2

log = logging.getLogger("actorhub.hub")

# Batches queued per stream: at 10 batches a second per node, tens of seconds of a busy node.
QUEUE_BATCHES = 512


class _Stream:
    __slots__ = ("dropped", "job_id", "queue")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[hub_pb2.LogBatch] = asyncio.Queue(QUEUE_BATCHES)
        self.dropped = 0


class LogFanout:
    """Used on the hub's loop only."""

    def __init__(self) -> None:
        self._streams: dict[str, set[_Stream]] = defaultdict(set)

    @property
    def subscribers(self) -> int:
        return sum(len(streams) for streams in self._streams.values())

    def publish(self, batch: hub_pb2.LogBatch) -> None:
        if not self._streams:
            return
        by_job: dict[str, list[hub_pb2.LogChunk]] = defaultdict(list)
        for chunk in batch.chunks:
            by_job[chunk.job_id].append(chunk)
        for job_id, chunks in by_job.items():
            streams = self._streams.get(job_id, set()) if job_id else {s for ss in self._streams.values() for s in ss}
            if not streams:
                continue
            part = hub_pb2.LogBatch(node_id=batch.node_id, node_ip=batch.node_ip, chunks=chunks)
            for stream in streams:
                try:
                    stream.queue.put_nowait(part)
                except asyncio.QueueFull:
                    stream.dropped += 1
                    if stream.dropped == 1:
                        log.warning("job %s's driver does not keep up with its workers' output: dropping "
                                    "batches (the session's log files keep them)", job_id)

    async def follow(self, job_id: str, shutdown: asyncio.Event) -> AsyncIterator[hub_pb2.LogBatch]:
        """The batches for `job_id` until the hub shuts down; the caller's end (the RPC
        cancelled) ends the subscription."""
        stream = _Stream(job_id)
        self._streams[job_id].add(stream)
        stopping = asyncio.ensure_future(shutdown.wait())
        getting: asyncio.Future[hub_pb2.LogBatch] | None = None
        try:
            while not shutdown.is_set():
                getting = asyncio.ensure_future(stream.queue.get())
                done, _ = await asyncio.wait((getting, stopping), return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    return
                yield getting.result()
        finally:
            stopping.cancel()
            if getting is not None:
                getting.cancel()
            streams = self._streams.get(job_id)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._streams[job_id]
