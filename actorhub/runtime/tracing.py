"""OpenTelemetry spans for actor calls, tasks and actor starts.

A call is a span when it is submitted and one when it runs; between them, a span for the time
it waited in the actor's mailbox. The submitting span's W3C trace context travels in the call
(`Call.trace_context`), with the time it was sent, so one trace follows a request through
actors and tasks. A task is submitted in its caller's thread but dispatched later from the
submitter's: it carries the context of its submission to its dispatch (`resumed`). An actor's
spec carries its creator's context, so each start of the actor, restarts included, is a span
of the trace that created it.

With no tracer provider configured nothing here runs beyond one dictionary lookup per call:
the SDK is never imported by actorhub, so `active()` is False until the program, a startup hook
(`init(_tracing_startup_hook=)`) or `ACTORHUB_OTLP_ENDPOINT` (`export_to`) sets tracing up.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

_SDK = "opentelemetry.sdk.trace"
# The key under which a call's trace context also carries when it was sent (ns since the epoch).
SENT_AT_KEY = "actorhub-sent-ns"
# How long spans wait to be exported in a batch, unless OTEL_BSP_SCHEDULE_DELAY says: short,
# because a worker killed with its actor loses what it had not sent yet.
_EXPORT_DELAY_MS = 200
_exporting: list[str] = []


def active() -> bool:
    if _SDK not in sys.modules:
        return False
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def submit_context(name: str, verb: str = "submit") -> dict[str, str]:
    """Record the submission of `name` (its creation: verb "create") and return the trace
    context to send with it."""
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    with trace.get_tracer("actorhub").start_as_current_span(f"{verb} {name}", kind=trace.SpanKind.PRODUCER):
        propagate.inject(carrier)
    return carrier


@contextmanager
def execute_span(name: str, carrier: Mapping[str, str]) -> Iterator[None]:
    """Run the body as the span of `name`'s execution, a child of its submission, after a span
    of the time it waited from being sent until now."""
    if not active():
        yield
        return
    from opentelemetry import propagate, trace

    context = propagate.extract(dict(carrier))
    tracer = trace.get_tracer("actorhub")
    sent_at = carrier.get(SENT_AT_KEY)
    if sent_at is not None and sent_at.isdigit():
        queued = tracer.start_span(f"queued {name}", context=context, start_time=int(sent_at),
                                   kind=trace.SpanKind.INTERNAL)
        queued.end()
    with tracer.start_as_current_span(f"execute {name}", context=context, kind=trace.SpanKind.CONSUMER):
        yield


@contextmanager
def resumed(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the context in `carrier` current for the body: work done there (a task's dispatch,
    on the submitter's thread) joins the trace the carrier came from."""
    if not carrier or not active():
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        context.detach(token)


@contextmanager
def span(name: str) -> Iterator[None]:
    """A span of the current trace around the body (a task's run inside its executor's call)."""
    if not active():
        yield
        return
    from opentelemetry import trace

    with trace.get_tracer("actorhub").start_as_current_span(name):
        yield


@contextmanager
def start_span(class_name: str, incarnation: int, carrier: Mapping[str, str]) -> Iterator[None]:
    """An actor's start (its constructor): "restart Class" from the second process on, in the
    trace of the actor's creation."""
    if not active():
        yield
        return
    from opentelemetry import propagate, trace

    name = f"{'restart' if incarnation else 'start'} {class_name}"
    with trace.get_tracer("actorhub").start_as_current_span(
        name, context=propagate.extract(dict(carrier)), attributes={"actorhub.incarnation": incarnation}
    ):
        yield


def export_to(endpoint: str | None, service_name: str) -> None:
    """Export this process's spans over OTLP/gRPC to `endpoint` (ACTORHUB_OTLP_ENDPOINT), with
    the standard exporter; a no-op without one, or once set up in this process."""
    if not endpoint or _exporting:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    insecure = not endpoint.startswith("https://")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    delay = int(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", _EXPORT_DELAY_MS))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure), schedule_delay_millis=delay)
    )
    trace.set_tracer_provider(provider)
    _exporting.append(endpoint)
    atexit.register(provider.shutdown)  # what the batch still holds goes out at a clean exit


def flush(timeout_s: float = 5.0) -> None:
    """Send the spans this process still holds (before a shutdown that may not run atexit)."""
    if not active():
        return
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(int(timeout_s * 1000))


def run_startup_hook(spec: str | None) -> None:
    """Call "module:function", which sets tracing up in this process (Ray's tracing startup hook)."""
    if not spec:
        return
    module_name, _, function_name = spec.partition(":")
    hook: Any = getattr(importlib.import_module(module_name), function_name)
    hook()
