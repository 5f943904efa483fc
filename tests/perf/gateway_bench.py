"""Calls per second through the gateway (issue 14), over HTTP/JSON and gRPC, to a trivial typed method.

Starts a local cluster, a named typed actor whose `echo(n: int) -> int` returns its argument,
and `actorhub serve-gateway` as a subprocess; then, for each protocol, `--clients` concurrent
callers (one keep-alive connection each) call it for `--duration` seconds, after a warm-up.
Each call is a full round trip: client -> gateway (JSON parsed, validated against the hints)
-> actor -> gateway -> client. Prints calls/s and per-call latency (p50, p99), or JSON.

    .venv/bin/python tests/perf/gateway_bench.py
    .venv/bin/python tests/perf/gateway_bench.py --clients 1 --duration 5 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc

import actorhub
from actorhub._proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc

NAMESPACE = "bench"


@actorhub.remote(typed=True)
class Echo:
    def echo(self, n: int) -> int:
        return n


async def _http_client(url: str, token: str, until: float, latencies: list[float]) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        n = 0
        while time.perf_counter() < until:
            start = time.perf_counter()
            async with session.post(url, data=json.dumps({"args": [n]})) as reply:
                body = await reply.json()
            assert reply.status == 200 and body == {"result": n}, body
            latencies.append(time.perf_counter() - start)
            n += 1


async def _grpc_client(address: str, token: str, until: float, latencies: list[float]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        n = 0
        while time.perf_counter() < until:
            start = time.perf_counter()
            request = gateway_pb2.InvokeRequest(namespace=NAMESPACE, actor="echo", method="echo",
                                                args_json=json.dumps({"args": [n]}))
            reply = await stub.Invoke(request, metadata=metadata, timeout=30)
            assert json.loads(reply.result_json) == n
            latencies.append(time.perf_counter() - start)
            n += 1


async def _measure(kind: str, target: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    client = _http_client if kind == "http" else _grpc_client
    warm: list[float] = []
    await asyncio.gather(*(client(target, token, time.perf_counter() + 1.0, warm) for _ in range(clients)))
    latencies: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(client(target, token, start + seconds, latencies) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "protocol": kind, "clients": clients, "calls": len(latencies),
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers per protocol (default 8)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per protocol (default 10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    context = actorhub.init(num_cpus=2, namespace=NAMESPACE)
    gateway = None
    try:
        echo = Echo.options(name="echo").remote()
        assert actorhub.get(echo.echo.remote(1)) == 1
        token = (Path(context.session_dir) / "token").read_text().strip()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "actorhub.cli", "serve-gateway", "--address", context.address, "--port", "0"],
            stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        assert gateway.stdout is not None
        line = gateway.stdout.readline()
        while line and "gateway serves" not in line:
            line = gateway.stdout.readline()
        found = re.search(r"http://(\S+), gRPC at (\S+)", line)
        if found is None:
            raise SystemExit(f"the gateway did not start: {line!r}")
        http, grpc_address = found.group(1), found.group(2)
        url = f"http://{http}/v1/namespaces/{NAMESPACE}/actors/echo/echo"
        results = [
            asyncio.run(_measure("http", url, token, args.clients, args.duration)),
            asyncio.run(_measure("grpc", grpc_address, token, args.clients, args.duration)),
        ]
    finally:
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
        actorhub.shutdown()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['protocol']:>5}: {r['calls_per_s']:>8.1f} calls/s with {r['clients']} clients "
                  f"({r['calls']} calls; p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
