"""Worker output on the wire: node agents publish it to the hub, drivers subscribe to their job's.

Node agents send `PublishLogs` (unary, one attempt per batch: a hub that is away loses that
batch, and the lines stay in the files). A driver holds `SubscribeLogs(job_id)`, a server
stream from the hub, on a thread of its own (`LogSubscription`), reopened with a backoff
when it breaks (a hub restarting), as the job's lease is (`wire/hub.py`'s `JobLease`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from actorhub._proto.v1 import hub_pb2, hub_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.wire.records import LogLines
from actorhub.wire.rpc import NOT_FOUND, Client, Peer, ServerStream, unary
from actorhub.wire.stream_loop import LoopServerStream, StreamLoop
from actorhub.wire.transport import ChannelPool

log = logging.getLogger(__name__)

# Reopening a subscription after it broke: the first pause, doubled per failure up to the last.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0

# What a driver gets: the node the lines come from (its id and advertised host) and the lines.
LogReceiver = Callable[[str, str, list[LogLines]], None]


class HubLogClient(Client[hub_pb2_grpc.HubStub]):
    def __init__(
        self, channels: ChannelPool, address: str, deadlines: RpcDeadlines, streams: StreamLoop | None = None
    ) -> None:
        """`streams`: the process's stream loop, where a subscription runs (stream_loop says why)."""
        super().__init__(channels, Peer("hub", address), deadlines, hub_pb2_grpc.HubStub)
        self._streams = streams

    def publish(self, node_id: str, node_ip: str, chunks: Sequence[LogLines]) -> None:
        """Send one batch; not repeated (a repeat would print the lines twice)."""
        request = hub_pb2.LogBatch(node_id=node_id, node_ip=node_ip, chunks=[
            hub_pb2.LogChunk(job_id=c.job_id, pid=c.pid, name=c.name, is_stderr=c.is_stderr, lines=c.lines)
            for c in chunks
        ])
        unary(Peer("hub", self.address), "PublishLogs", self._stub().PublishLogs, request, self.deadlines.control_s)

    def subscribe(self, job_id: str) -> ServerStream[hub_pb2.LogBatch]:
        """The job's output, for as long as the driver lives: no deadline; cancel() ends it."""
        request = hub_pb2.LogSubscribeRequest(job_id=job_id)
        if self._streams is not None:
            return LoopServerStream(self._streams, Peer("hub", self.address), "SubscribeLogs",
                                    lambda channel: channel.unary_stream(
                                        "/actorhub.v1.Hub/SubscribeLogs",
                                        request_serializer=hub_pb2.LogSubscribeRequest.SerializeToString,
                                        response_deserializer=hub_pb2.LogBatch.FromString)(request))
        return ServerStream(Peer("hub", self.address), "SubscribeLogs", self._stub().SubscribeLogs(request), None)


def chunks_of(batch: hub_pb2.LogBatch) -> list[LogLines]:
    return [LogLines(job_id=c.job_id, pid=c.pid, name=c.name, is_stderr=c.is_stderr, lines=tuple(c.lines))
            for c in batch.chunks]


class LogSubscription:
    """A driver's subscription to its job's output, on a thread of its own until `cancel()`.

    Each batch goes to `receive` on that thread. A stream that breaks is opened again, with a
    backoff, for up to `reconnect_s` (lines published meanwhile are lost: the hub keeps none).
    """

    def __init__(self, client: HubLogClient, job_id: str, receive: LogReceiver, reconnect_s: float) -> None:
        self._client = client
        self._job_id = job_id
        self._receive = receive
        self._reconnect_s = reconnect_s
        self._lock = threading.Lock()
        self._stream: ServerStream[hub_pb2.LogBatch] | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="actorhub-driver-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        with self._lock:
            self._stopped.set()
            stream = self._stream
        if stream is not None:
            stream.cancel()

    def _open(self) -> ServerStream[hub_pb2.LogBatch] | None:
        with self._lock:
            if self._stopped.is_set():
                return None
            self._stream = self._client.subscribe(self._job_id)
            return self._stream

    def _run(self) -> None:
        broken_at: float | None = None
        pause = RETRY_FIRST_S
        while (stream := self._open()) is not None:
            opened = time.monotonic()
            try:
                for batch in stream:
                    self._receive(batch.node_id, batch.node_ip, chunks_of(batch))
                return  # the hub ended it: it is shutting down
            except RpcFailedError as e:
                if self._stopped.is_set() or e.code == NOT_FOUND:
                    return
                now = time.monotonic()
                if broken_at is None or now - opened >= 1.0:  # it held a while: the hub was back
                    broken_at, pause = now, RETRY_FIRST_S
                    log.info("job %s's log stream from %s broke (%s); reopening it", self._job_id,
                             self._client.address, e)
                elif now - broken_at >= self._reconnect_s:
                    log.warning("job %s's log stream from %s could not be reopened within %g s: workers' output "
                                "no longer reaches this driver (it stays in the session's log files)",
                                self._job_id, self._client.address, self._reconnect_s)
                    return
            if self._stopped.wait(pause):
                return
            pause = min(pause * 2, RETRY_MAX_S)
