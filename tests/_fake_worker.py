"""A stand-in worker for the zygote and node agent tests (ACTORHUB_ZYGOTE_CHILD_ENTRY).

It has the real worker's boot contract: serve the Worker service on bind_host:0, register with
the node, run StartActor. The "constructor" is chosen by the spec's class name:
Boom raises, Die exits the process with code 3, Slow never returns, anything else succeeds.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from actorhub._proto.v1 import common_pb2, node_pb2, node_pb2_grpc, worker_pb2, worker_pb2_grpc
from actorhub.cluster.session import Session
from actorhub.wire.errors import error_to_proto
from actorhub.wire.server import bind, make_server
from actorhub.wire.transport import ChannelPool


@dataclass(frozen=True)
class WorkerBoot:
    worker_id: str
    node_id: str
    node_address: str
    hub_address: str
    session_dir: Path
    bind_host: str


class _FakeWorker(worker_pb2_grpc.WorkerServicer):
    def StartActor(
        self, request: worker_pb2.StartActorRequest, context: grpc.ServicerContext
    ) -> worker_pb2.StartActorReply:
        kind = request.spec.class_name
        if kind == "Boom":
            try:
                raise ValueError("boom in __init__")
            except ValueError as e:
                return worker_pb2.StartActorReply(ok=False, error=error_to_proto(e))
        if kind == "Die":
            os._exit(3)
        if kind == "Slow":
            threading.Event().wait()
        print(f"actor {request.spec.actor_id} started", flush=True)
        return worker_pb2.StartActorReply(ok=True)

    def Ping(self, request: common_pb2.Empty, context: grpc.ServicerContext) -> common_pb2.Empty:
        return common_pb2.Empty()


def run_worker(boot: WorkerBoot) -> None:
    token = Session(boot.session_dir).token
    server = make_server(token, max_workers=8)
    worker_pb2_grpc.add_WorkerServicer_to_server(_FakeWorker(), server)
    address = bind(server, boot.bind_host, 0)
    server.start()
    print(f"fake worker {boot.worker_id} serving at {address}", flush=True)
    if boot.node_address:
        node = node_pb2_grpc.NodeStub(ChannelPool(token).get(boot.node_address))
        node.RegisterWorker(
            node_pb2.RegisterWorkerRequest(worker_id=boot.worker_id, address=address, pid=os.getpid()),
            timeout=10,
        )
    server.wait_for_termination()
