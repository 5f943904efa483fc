"""One OpenTelemetry trace follows a call from the caller into the actor's worker."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _drivers import run_driver

import actorhub

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def traced_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    spans = tmp_path / "spans.jsonl"
    monkeypatch.setenv("ACTORHUB_TEST_SPANS", str(spans))
    monkeypatch.setenv("ACTORHUB_TRACING_STARTUP_HOOK", "_tracing_hook:setup")
    # Workers import the hook module: they need this directory on their path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    actorhub.init(num_cpus=1)
    try:
        yield spans
    finally:
        actorhub.shutdown()


def test_a_call_is_one_trace_across_processes(traced_cluster: Path) -> None:
    # A separate driver: a tracer provider, once set, stays for the life of its process.
    out = run_driver(
        """
        import os, actorhub, _tracing_hook

        @actorhub.remote
        class Echo:
            def echo(self, x):
                return x

        @actorhub.remote
        class AsyncEcho:
            async def echo(self, x):
                return x

        actorhub.init(address="auto")
        echo = Echo.remote()
        async_echo = AsyncEcho.remote()
        actorhub.get(echo.echo.remote(0))  # untraced: no tracer provider in this driver yet
        untraced = os.path.exists(os.environ["ACTORHUB_TEST_SPANS"])
        _tracing_hook.setup()
        assert actorhub.get(echo.echo.remote(1)) == 1
        assert actorhub.get(async_echo.echo.remote(2)) == 2
        print(os.getpid(), untraced)
        """
    )
    driver_pid, untraced = out.stdout.split()
    assert untraced == "False"
    deadline = time.monotonic() + 10
    while True:
        text = traced_cluster.read_text() if traced_cluster.exists() else ""
        spans = [json.loads(line) for line in text.splitlines()]
        wanted = {f"{what} {cls}.echo" for what in ("submit", "execute") for cls in ("Echo", "AsyncEcho")}
        if wanted <= {s["name"] for s in spans} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for cls in ("Echo", "AsyncEcho"):  # a sync actor's call, and an async actor's
        submit = next(s for s in spans if s["name"] == f"submit {cls}.echo")
        execute = next(s for s in spans if s["name"] == f"execute {cls}.echo")
        assert submit["pid"] == int(driver_pid) and execute["pid"] != int(driver_pid)
        assert execute["trace_id"] == submit["trace_id"]
        assert execute["parent_id"] == submit["span_id"]
