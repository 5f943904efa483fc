"""The node agent: one per machine, serving the Node service.

It registers the node with the hub, holds the node's lease (a stream the hub watches for the
node's death, and closes or marks `shutdown` to stop the node), runs actors' constructors in
workers taken from the WorkerPool, kills workers on the hub's request and reports every death
of an actor's worker to the hub. It reserves no resources: the hub does the accounting.

It serves on an asyncio event loop (`ServerLoop`): a StartActor waits for a worker and then
for the actor's constructor without holding a thread, so any number of actors may be started
at once while registrations, store calls and node info are answered. Handlers that would block
(the store's copies, transfers between nodes) run on bounded executors (object_store/service.py).
The node's own calls to the hub (registration, the lease, exit reports) are sync, each on a
thread of its own.

The hub may crash and be restarted by its supervisor: a lease that breaks without the hub
asking the node to stop does not stop the node. It registers again (`reconnect=True`, with
the actors it hosts, so the restarted hub can reconcile its table) and reopens the lease,
with a backoff, for up to `Config.hub_reconnect_timeout_s`; only then does it stop. Its
workers, and calls between actors, go on meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from actorhub._proto.v1 import (
    common_pb2,
    hub_pb2,
    node_pb2,
    node_pb2_grpc,
)
from actorhub.cluster.addresses import parse_address
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.exceptions import RpcFailedError
from actorhub.metrics import node_exporter
from actorhub.node.actor_starts import ActorStarts
from actorhub.node.env_pools import NodeWorkerPools
from actorhub.node.log_monitor import LogMonitor
from actorhub.node.offered import node_resources, offered_resources
from actorhub.node.workers import Worker
from actorhub.node.zygote import ZygoteProcess
from actorhub.object_store.service import NodeObjects
from actorhub.wire.hub import HubClient
from actorhub.wire.logs import HubLogClient
from actorhub.wire.rpc import GONE_CODES
from actorhub.wire.runtime_env import RuntimeEnvPackagesClient
from actorhub.wire.server import ServerLoop, abort
from actorhub.wire.tls import load_tls
from actorhub.wire.transport import AsyncChannelPool, ChannelPool

log = logging.getLogger(__name__)

# A report the hub refuses (not for being away) is dropped after this many attempts.
_REPORT_ATTEMPTS = 5
# Pauses between attempts to reach a hub that is away: doubled per failure, up to the last.
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0
# A lease that held this long was the hub back for good: the next break starts a new backoff.
_LEASE_STABLE_S = 1.0


@dataclass(eq=False)
class _PendingReport:
    report: hub_pb2.WorkerExitReport
    attempts: int = 0
    first_failure: float | None = None


@dataclass(frozen=True)
class NodeOptions:
    session_dir: Path
    hub_address: str
    node_id: str
    config: Config
    head: bool = False  # the node started with the hub: it offers node:__internal_head__


class NodeAgent:
    def __init__(
        self, options: NodeOptions, zygote: ZygoteProcess, spawn_zygote: Callable[[], ZygoteProcess],
    ) -> None:
        self.options = options
        self.config = options.config
        self.node_id = options.node_id
        self.session = Session(options.session_dir)
        configured = self.config.num_cpus
        self.num_cpus = float(configured if configured is not None else os.cpu_count() or 1)
        self.resources = offered_resources(self.config)
        self.address = ""
        self.tls = load_tls(self.config)  # a bad file stops the node here, named
        self._channels = ChannelPool(self.session.token, self.config.max_message_bytes, self.tls)
        self._hub = HubClient(
            self._channels, options.hub_address, self.config.deadlines,
            reconnect_s=self.config.hub_reconnect_timeout_s,
        )
        # The base pool (the node's own zygote) and one per pip runtime_env (node/env_pools.py).
        packages = RuntimeEnvPackagesClient(
            self._channels, options.hub_address, self.config.deadlines, self.config.max_message_bytes)
        self.pools = NodeWorkerPools(
            zygote, spawn_zygote, node_id=self.node_id, session_dir=self.session.path,
            hub_address=options.hub_address, config=self.config, on_actor_exit=self._queue_report,
            fetch_package=packages.fetch,
        )
        self.pool = self.pools.base
        # StartActor and KillWorker (node/actor_starts.py); its channels to workers are the loop's.
        self.starts = ActorStarts(
            self.pools, AsyncChannelPool(self.session.token, self.config.max_message_bytes, self.tls),
            self.config, self.node_id,
        )
        self._reports: queue.Queue[hub_pb2.WorkerExitReport | None] = queue.Queue()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._lease: Any = None  # the NodeLease call, cancelled on shutdown
        self._log_monitor: LogMonitor | None = None  # workers' output to the hub, once registered
        self.objects = NodeObjects(
            self.session.path, self.node_id, self.config.object_store_memory, self._channels,
            lost_result_grace_s=self.config.lost_result_grace_s, deadlines=self.config.deadlines,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until the hub, a Shutdown call or SIGTERM ends the node; the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        server = ServerLoop(
            self.session.token, name="node-io", max_message_bytes=self.config.max_message_bytes, tls=self.tls,
            pin_io_threads=self.config.pin_io_threads,
        )
        node_pb2_grpc.add_NodeServicer_to_server(NodeServicer(self), server.server)
        self.address = server.bind(self.config.bind_host, 0)
        self.resources = {**self.resources, **node_resources(self.address, self.options.head)}
        self.objects.serving_at(self.address)
        self.metrics_port = node_exporter.start_for_node(self.node_id, self.address, self.session.path,
                                                         self.objects.store.stats, self.pools.counts, self.config)
        server.start()
        pid_file = self.session.pid_file(f"node-{self.node_id}")
        pid_file.write_text(f"{os.getpid()}\n")
        # Forks start now, overlapping the hub registration.
        self.pools.start(self.address)
        threading.Thread(target=self._send_reports, name="exit-reports", daemon=True).start()
        status = 0
        try:
            if self._register():
                threading.Thread(target=self._hold_lease, name="node-lease", daemon=True).start()
                self._start_log_monitor()
                log.info("node %s serving at %s (pid %d)", self.node_id, self.address, os.getpid())
                # A timed wait, so that signal handlers get to run on this thread.
                while not self._stop.wait(0.5):
                    pass
                log.info("node %s stopping: %s", self.node_id, self._stop_reason)
            else:
                status = 1
        finally:
            self._shutdown(server)
            with contextlib.suppress(OSError):
                if pid_file.read_text().strip() == str(os.getpid()):
                    pid_file.unlink()
        return status

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop(f"signal {signal.Signals(signum).name}")

    def _shutdown(self, server: ServerLoop) -> None:
        self._stop.set()
        # Waiting StartActors fail, and those in a constructor see their worker die.
        self.pools.shutdown(self.config.kill_grace_s)
        self._reports.put(None)
        if self._log_monitor is not None:
            self._log_monitor.stop()  # the workers are gone: their last lines go out first
        if self._lease is not None:
            self._lease.cancel()
        with contextlib.suppress(Exception):
            server.submit(self._close_loop_side()).result(timeout=2.0)
        server.stop(grace=1.0, timeout=3.0)
        self._channels.close()
        # The segments live in /dev/shm, which outlives processes: they must be removed.
        self.objects.close()

    async def _close_loop_side(self) -> None:
        await self.starts.close()

    def _start_log_monitor(self) -> None:
        client = HubLogClient(self._channels, self.options.hub_address, self.config.deadlines)
        host = parse_address(self.address, "the node's address")[0]
        self._log_monitor = LogMonitor(self.session.logs, self.node_id, partial(client.publish, self.node_id, host))
        self._log_monitor.start()

    def _register(self) -> bool:
        deadline = time.monotonic() + self.config.connect_timeout_s
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            try:
                # wait_for_ready: the hub may still be starting when the node is.
                self._hub.register_node(self.node_id, self.address, self.num_cpus, os.getpid(), max(0.1, remaining),
                                        resources=self.resources, metrics_export_port=self.metrics_port)
                return True
            except RpcFailedError as e:
                if time.monotonic() >= deadline or e.code not in GONE_CODES:
                    log.error("cannot register node %s with the hub at %s: %s",
                              self.node_id, self.options.hub_address, e)
                    return False
                time.sleep(0.05)
        return False

    def _hold_lease(self) -> None:
        """Hold the node's lease until the hub asks the node to stop, reconnecting whenever it
        breaks, until the hub has been away for hub_reconnect_timeout_s. The hub is back once
        a reopened lease holds: one that breaks again at once does not restart the clock."""
        timeout = self.config.hub_reconnect_timeout_s
        hub = self.options.hub_address
        broken_at: float | None = None  # when the lease broke; None while it holds
        why = ""
        pause = _RETRY_FIRST_S
        while not self._stop.is_set():
            if broken_at is not None:
                if time.monotonic() - broken_at >= timeout:
                    reason = (f"the hub at {hub} did not come back within {timeout:g} s of the node's lease "
                              f"breaking ({why})")
                    log.error("node %s stops: %s", self.node_id, reason)
                    self.request_stop(reason)
                    return
                if not self._register_again(broken_at + timeout):
                    if self._stop.wait(pause):
                        return
                    pause = min(pause * 2, _RETRY_MAX_S)
                    continue
                log.warning("node %s registered again with the hub at %s, %.1f s after its lease broke; "
                            "reopening the lease", self.node_id, hub, time.monotonic() - broken_at)
            opened_at = time.monotonic()
            try:
                stop_reason = self._lease_until_end()
            except RpcFailedError as e:
                if self._stop.is_set():
                    return
                code = e.code.name if e.code is not None else "UNKNOWN"
                why = f"{code}: {e.details}"
                now = time.monotonic()
                if broken_at is None or now - opened_at >= _LEASE_STABLE_S:
                    broken_at, pause = now, _RETRY_FIRST_S
                    log.warning("node %s's lease with the hub at %s broke (%s); reconnecting for up to %g s",
                                self.node_id, hub, why, timeout)
                else:
                    log.warning("node %s's reopened lease broke at once (%s)", self.node_id, why)
                    if self._stop.wait(pause):
                        return
                    pause = min(pause * 2, _RETRY_MAX_S)
                continue
            self.request_stop(stop_reason)
            return

    def _lease_until_end(self) -> str:
        """Hold one lease stream; the reason to stop when the hub ends it. A break raises."""
        lease = self._hub.node_lease(self.node_id)
        self._lease = lease
        if self._stop.is_set():  # shutdown began before it could cancel this stream
            lease.cancel()
        for event in lease:
            if event.shutdown:
                return "the hub asked the node to shut down"
        return "the hub ended the node's lease"

    def _register_again(self, give_up_at: float) -> bool:
        """RegisterNode with reconnect=True and the actors hosted here; False if it failed."""
        hosted = self.pools.hosted()
        remaining = give_up_at - time.monotonic()
        log.info("node %s registering again with the hub at %s (%d actor(s) hosted, %.1f s left)",
                 self.node_id, self.options.hub_address, len(hosted), remaining)
        try:
            self._hub.register_node(
                self.node_id, self.address, self.num_cpus, os.getpid(),
                max(0.1, min(remaining, self.config.deadlines.control_s)), reconnect=True, actors=hosted,
                resources=self.resources, metrics_export_port=self.metrics_port,
            )
        except RpcFailedError as e:
            log.info("node %s could not register again: %s", self.node_id, e)
            return False
        return True

    # -- exit reports ---------------------------------------------------------------------------

    def _queue_report(self, worker: Worker) -> None:
        # Never call the hub from the zygote event reader: it must keep draining the pipe.
        self._reports.put(hub_pb2.WorkerExitReport(
            node_id=self.node_id, actor_id=worker.actor_id, incarnation=worker.incarnation,
            pid=worker.pid, exit_code=worker.exit_code, signal=worker.signal,
        ))

    def _send_reports(self) -> None:
        """Send exit reports in order. While the hub is away they wait, each for up to
        hub_reconnect_timeout_s since it first failed; one the hub refuses goes behind the others."""
        pending: deque[_PendingReport] = deque()
        pause = _RETRY_FIRST_S
        while True:
            if not pending:
                first = self._reports.get()
                if first is None:
                    return
                pending.append(_PendingReport(first))
            while not self._reports.empty():
                report = self._reports.get_nowait()
                if report is None:
                    return
                pending.append(_PendingReport(report))
            if self._stop.is_set():
                return  # the hub learns of the node's end through the lease
            if self._send_pending(pending):
                pause = _RETRY_FIRST_S
                continue
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, _RETRY_MAX_S)

    def _send_pending(self, pending: deque[_PendingReport]) -> bool:
        """Send the pending reports in order; False once one failed (it stays pending)."""
        while pending:
            item = pending[0]
            r = item.report
            try:
                self._hub.report_worker_exit(r.node_id, r.actor_id, r.incarnation, r.pid, r.exit_code, r.signal)
                pending.popleft()
                continue
            except RpcFailedError as e:
                error = e
            now = time.monotonic()
            item.attempts += 1
            if item.first_failure is None:
                item.first_failure = now
            away = error.code in GONE_CODES
            if (away and now - item.first_failure >= self.config.hub_reconnect_timeout_s) or (
                not away and item.attempts >= _REPORT_ATTEMPTS
            ):
                log.error("giving up reporting the exit of actor %s's worker (pid %d) after %d attempts: %s",
                          r.actor_id, r.pid, item.attempts, error)
                pending.popleft()
                continue
            log.warning("reporting the exit of actor %s's worker failed (attempt %d): %s",
                        r.actor_id, item.attempts, error)
            if not away:
                pending.rotate(-1)  # the hub is there: the others need not wait for this one
            return False
        return True

    # -- Node service operations ----------------------------------------------------------------

    def node_info(self) -> node_pb2.NodeInfo:
        counts = self.pools.counts()
        return node_pb2.NodeInfo(
            node_id=self.node_id,
            address=self.address,
            num_cpus=self.num_cpus,
            # Informational only: the hub's own accounting is what scheduling uses.
            available_cpus=max(0.0, self.num_cpus - counts.cpus_in_use),
            idle_workers=counts.idle,
            actor_workers=counts.actors,
            pid=os.getpid(),
        )


Context = grpc.aio.ServicerContext[Any, Any]


class NodeServicer(node_pb2_grpc.NodeServicer):
    """Served on the agent's event loop. Handlers never block it: waits are awaited, and the
    store's calls that copy or transfer bytes run on its executors."""

    def __init__(self, agent: NodeAgent) -> None:
        self._agent = agent

    async def RegisterWorker(self, request: node_pb2.RegisterWorkerRequest, context: Context) -> common_pb2.Empty:
        if not self._agent.pools.register(request.worker_id, request.address, request.pid):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                                f"worker {request.worker_id} is not expected by node {self._agent.node_id}")
        return common_pb2.Empty()

    async def StartActor(
        self, request: node_pb2.NodeStartActorRequest, context: Context,
    ) -> node_pb2.NodeStartActorReply:
        return await self._agent.starts.start(request)

    async def KillWorker(self, request: node_pb2.KillWorkerRequest, context: Context) -> common_pb2.Empty:
        await self._agent.starts.kill(request)
        return common_pb2.Empty()

    async def GetNodeInfo(self, request: common_pb2.Empty, context: Context) -> node_pb2.NodeInfo:
        return self._agent.node_info()

    async def ReserveObject(self, request: node_pb2.ReserveObjectRequest, context: Context) -> node_pb2.ObjectLocation:
        return await self._agent.objects.reserve(request, context)

    async def SealObject(self, request: node_pb2.ObjectIdRequest, context: Context) -> node_pb2.ObjectLocation:
        return await self._agent.objects.seal(request, context)

    async def OpenObject(self, request: node_pb2.OpenObjectRequest, context: Context) -> node_pb2.ObjectLocation:
        return await self._agent.objects.open(request, context)

    async def ReleaseObjects(self, request: node_pb2.ReleaseObjectsRequest, context: Context) -> common_pb2.Empty:
        return self._agent.objects.release(request)

    async def DeleteObjects(self, request: node_pb2.DeleteObjectsRequest, context: Context) -> common_pb2.Empty:
        return await self._agent.objects.delete(request)

    async def ListObjects(self, request: common_pb2.Empty, context: Context) -> node_pb2.ListObjectsReply:
        return self._agent.objects.list()

    async def PullObject(self, request: node_pb2.PullObjectRequest, context: Context) -> common_pb2.Empty:
        return await self._agent.objects.pull(request, context)

    async def ReadObject(
        self, request: node_pb2.ReadObjectRequest, context: Context,
    ) -> AsyncIterator[node_pb2.ObjectChunk]:
        # Closed with the call, even one cancelled between chunks: the object is unpinned at once.
        async with contextlib.aclosing(self._agent.objects.read(request, context)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def DescribeStore(self, request: common_pb2.Empty, context: Context) -> node_pb2.StoreInfo:
        return self._agent.objects.describe()

    async def WriteObject(
        self, requests: AsyncIterator[node_pb2.ObjectWrite], context: Context,
    ) -> node_pb2.ObjectLocation:
        return await self._agent.objects.write(requests, context)

    async def Shutdown(self, request: common_pb2.Empty, context: Context) -> common_pb2.Empty:
        # The main thread does the work once this reply is on its way.
        self._agent.request_stop("Shutdown was called")
        return common_pb2.Empty()


def run_node(options: NodeOptions, zygote: ZygoteProcess, spawn_zygote: Callable[[], ZygoteProcess]) -> int:
    options.session_dir.joinpath("logs").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(Session(options.session_dir).logs / f"node-{options.node_id}.log"),
        level=options.config.logging_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    return NodeAgent(options, zygote, spawn_zygote).run()
