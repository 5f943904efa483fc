"""A tracing startup hook for tests: spans go, one JSON line each, to $ACTORHUB_TEST_SPANS."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class FileExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as f:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                f.write(json.dumps({
                    "name": span.name,
                    "trace_id": context.trace_id,
                    "span_id": context.span_id,
                    "parent_id": span.parent.span_id if span.parent is not None else None,
                    "pid": os.getpid(),
                }) + "\n")
        return SpanExportResult.SUCCESS


def setup() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["ACTORHUB_TEST_SPANS"])))
    trace.set_tracer_provider(provider)
