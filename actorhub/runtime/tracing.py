"""OpenTelemetry spans for actor calls: one when a call is submitted, one when it runs.

The submitting span's W3C trace context travels in the call (`Call.trace_context`), so one
trace follows a request through actors and tasks. With no tracer provider configured nothing
here runs beyond one dictionary lookup per call: the SDK is never imported by actorhub, so
`active()` is False until the program (or a worker's startup hook) sets tracing up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

_SDK = "opentelemetry.sdk.trace"


def active() -> bool:
    if _SDK not in sys.modules:
        return False
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def submit_context(name: str) -> dict[str, str]:
    """Record the submission of `name` and return the trace context to send with it."""
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    with trace.get_tracer("actorhub").start_as_current_span(f"submit {name}", kind=trace.SpanKind.PRODUCER):
        propagate.inject(carrier)
    return carrier


@contextmanager
def execute_span(name: str, carrier: Mapping[str, str]) -> Iterator[None]:
    """Run the body as the span of `name`'s execution, a child of its submission."""
    if not active():
        yield
        return
    from opentelemetry import propagate, trace

    context = propagate.extract(dict(carrier))
    with trace.get_tracer("actorhub").start_as_current_span(
        f"execute {name}", context=context, kind=trace.SpanKind.CONSUMER
    ):
        yield


def run_startup_hook(spec: str | None) -> None:
    """Call "module:function", which sets tracing up in this process (Ray's tracing startup hook)."""
    if not spec:
        return
    module_name, _, function_name = spec.partition(":")
    hook: Any = getattr(importlib.import_module(module_name), function_name)
    hook()
