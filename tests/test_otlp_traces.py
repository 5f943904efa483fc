"""Spans exported over OTLP (ACTORHUB_OTLP_ENDPOINT) by every process, received here by a
real OTLP/gRPC trace collector: one trace from the driver through an actor, a task and another
actor, with each call's wait in its mailbox, and each start of an actor, restarts included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from _drivers import run_driver
from _wait import wait_for
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append({
                            "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(), "service": attributes.get("service.name", ""),
                            "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                        })
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["name"] == name]


@pytest.fixture
def collector() -> Iterator[tuple[_Collector, str]]:
    servicer = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)


_PROGRAM = """
import os, time, actorhub

@actorhub.remote
class Store:
    def get(self):
        return 7

@actorhub.remote
def fetch(store):
    return actorhub.get(store.get.remote())

@actorhub.remote
class Front:
    def relay(self, store):
        return actorhub.get(fetch.remote(store))

@actorhub.remote(max_restarts=1)
class Fragile:
    def crash(self):
        os._exit(1)

    def ping(self):
        return "pong"

actorhub.init(num_cpus=2)
assert actorhub.get(Front.remote().relay.remote(Store.remote())) == 7
fragile = Fragile.remote()
assert actorhub.get(fragile.ping.remote()) == "pong"
time.sleep(1.0)  # the first process's spans are exported before it crashes (a batch every 200 ms)
try:
    actorhub.get(fragile.crash.remote())
except actorhub.exceptions.ActorDiedError:
    pass
assert actorhub.get(fragile.ping.remote()) == "pong"
"""


def _exported(collector: _Collector, names: list[str], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The first span of each name, once all have reached the collector."""
    wait_for(lambda: [name for name in names if not collector.named(name)], "the spans to be exported", timeout, 0.1,
             ok=lambda missing: not missing)
    return {name: collector.named(name)[0] for name in names}


def test_one_trace_from_driver_through_actor_task_actor_and_restarts(collector: tuple[_Collector, str]) -> None:
    spans, endpoint = collector
    # The driver starts the cluster with the endpoint: every process it starts exports there.
    run_driver(_PROGRAM + "time.sleep(1.0)\nactorhub.shutdown()\n",
               timeout=120, ACTORHUB_OTLP_ENDPOINT=endpoint)
    got = _exported(spans, [
        "submit Front.relay", "queued Front.relay", "execute Front.relay", "submit fetch", "task fetch",
        "submit Store.get", "queued Store.get", "execute Store.get",
        "create Fragile", "start Fragile", "restart Fragile",
    ])
    by_id = {s["id"]: s for s in spans.spans}

    def ancestors(span: dict[str, Any]) -> list[str]:
        names = []
        while span["parent"] in by_id:
            span = by_id[span["parent"]]
            names.append(span["name"])
        return names

    root = got["submit Front.relay"]
    assert root["service"] == "actorhub-driver" and root["parent"] == ""
    chain = ["execute Front.relay", "submit fetch", "task fetch", "submit Store.get", "execute Store.get"]
    assert {got[name]["trace"] for name in chain} == {root["trace"]}
    assert got["execute Front.relay"]["parent"] == root["id"]
    assert got["execute Front.relay"]["service"] == "actorhub-worker"
    # The task's submission, in Front's method; its run, in an executor; its call, to Store.
    assert ancestors(got["task fetch"])[:4] == [
        "execute TaskExecutor.execute", "submit TaskExecutor.execute", "submit fetch", "execute Front.relay"]
    assert ancestors(got["execute Store.get"])[:2] == ["submit Store.get", "task fetch"]
    for name in ("Front.relay", "Store.get"):  # the wait in the mailbox, then the run
        queued, executed = got[f"queued {name}"], got[f"execute {name}"]
        assert queued["parent"] == executed["parent"] and queued["start"] <= queued["end"] <= executed["end"]
    # Both processes of the actor start in the trace of its creation.
    create = got["create Fragile"]
    assert got["start Fragile"]["parent"] == got["restart Fragile"]["parent"] == create["id"]
    assert got["restart Fragile"]["trace"] == create["trace"]
