"""Every server checks the cluster token; the channels that send it."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

import actorhub
from actorhub._proto.v1 import common_pb2, hub_pb2_grpc, worker_pb2_grpc
from actorhub.cluster.session import latest_session
from actorhub.exceptions import MessageTooLargeError
from actorhub.wire.transport import open_channel


def _status(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        hub_pb2_grpc.HubStub(channel).GetClusterStatus(common_pb2.Empty(), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_calls_without_or_with_a_wrong_token_are_rejected(cluster: actorhub.ClusterContext, session_root: Path) -> None:
    session = latest_session(session_root)
    assert oct(session.path.joinpath("token").stat().st_mode & 0o777) == "0o600"
    address = cluster.address
    assert address.startswith("127.0.0.1:")
    with grpc.insecure_channel(address) as bare:
        assert _status(bare) == grpc.StatusCode.UNAUTHENTICATED
    wrong = open_channel(address, "0" * 64)
    assert _status(wrong) == grpc.StatusCode.UNAUTHENTICATED
    right = open_channel(address, session.token)
    assert _status(right) == grpc.StatusCode.OK
    # a worker's server too
    @actorhub.remote
    class A:
        def ping(self) -> int:
            return 1

    a = A.remote()
    assert actorhub.get(a.ping.remote()) == 1
    status = hub_pb2_grpc.HubStub(right).GetClusterStatus(common_pb2.Empty(), timeout=10)
    worker_address = next(x.address for x in status.actors if x.actor_id == a.actor_id)
    with grpc.insecure_channel(worker_address) as bare:
        with pytest.raises(grpc.RpcError) as info:
            worker_pb2_grpc.WorkerStub(bare).Ping(common_pb2.Empty(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for ch in (wrong, right):
        ch.close()


class _Held:
    pass


def _fail_holding(call: Callable[[], Any]) -> weakref.ref[_Held]:
    held = _Held()  # stands for the ObjectRefs a caller's frame holds while an RPC fails under it
    try:
        call()
    except grpc.RpcError:
        pass
    return weakref.ref(held)


def test_a_failed_call_leaves_no_cycle_pinning_its_callers_frames() -> None:
    # grpc.intercept_channel's unary path did: a ref in a frame above a failed call lived on
    # until the cyclic GC ran, and so did the object it named (once for longer than 15 s).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # nothing listens here
    channel = open_channel(address, "0" * 64)
    ping = worker_pb2_grpc.WorkerStub(channel).Ping
    gc.disable()
    try:
        for call in (lambda: ping(common_pb2.Empty(), timeout=2),
                     lambda: ping.with_call(common_pb2.Empty(), timeout=2)):
            assert _fail_holding(call)() is None
    finally:
        gc.enable()
        channel.close()


# ---- refused before the body is read -----------------------------------------------------------


def _idle_unauthenticated_calls(address: str, method: str, count: int, token: str | None) -> list[grpc.StatusCode]:
    """`count` calls that send their headers and then nothing: as a streaming call, so gRPC's
    client does not send a body; each waits until the server answers it."""

    async def run() -> list[grpc.StatusCode]:
        metadata = (("actorhub-token", token),) if token else None
        async with grpc.aio.insecure_channel(address) as channel:
            call_method = channel.stream_stream(method)
            forever = asyncio.Event()

            async def nothing() -> Any:
                await forever.wait()
                yield b""  # never reached

            calls = [call_method(nothing(), metadata=metadata, timeout=30) for _ in range(count)]
            codes: list[grpc.StatusCode] = []
            for call in calls:
                try:
                    async for _ in call:
                        pass
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as e:
                    codes.append(e.code())
            forever.set()
            return codes

    return asyncio.run(run())


def test_300_idle_unauthenticated_calls_are_refused_at_once_and_the_server_keeps_serving(
    cluster: actorhub.ClusterContext, session_root: Path
) -> None:
    session = latest_session(session_root)
    right = open_channel(cluster.address, session.token)
    try:
        for token in (None, "0" * 64):
            codes = _idle_unauthenticated_calls(cluster.address, "/actorhub.v1.Hub/GetClusterStatus", 300, token)
            # Refused from the headers alone: had the server waited for a body, these would end
            # at their 30 s deadline with DEADLINE_EXCEEDED.
            assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 300
        assert _status(right) == grpc.StatusCode.OK
    finally:
        right.close()


def test_a_huge_unauthenticated_message_is_refused_without_being_read(
    cluster: actorhub.ClusterContext, session_root: Path
) -> None:
    # Over the server's message limit (512 MiB): had the server read it before checking the
    # token, it would answer RESOURCE_EXHAUSTED; refused from its headers, UNAUTHENTICATED.
    huge = b"\0" * (600 * 1024 * 1024)
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(cluster.address, options=options) as bare:
        call = bare.unary_unary("/actorhub.v1.Hub/GetClusterStatus")
        with pytest.raises(grpc.RpcError) as info:
            call(huge, timeout=60)
    del huge
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    right = open_channel(cluster.address, latest_session(session_root).token)
    try:
        assert _status(right) == grpc.StatusCode.OK
    finally:
        right.close()


# ---- the message size limit --------------------------------------------------------------------


@actorhub.remote
class Blob:
    def echo(self, value: Any) -> Any:
        return value

    def make(self, size: int) -> list[bytes]:
        return [b"y" * size]

    def ping(self) -> int:
        return 1


def test_a_value_over_the_message_limit_is_refused_naming_the_limit(
    session_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 1024 * 1024
    monkeypatch.setenv("ACTORHUB_MAX_MESSAGE_BYTES", str(limit))
    actorhub.init(num_cpus=2)
    try:
        blob = Blob.remote()
        too_big = ["x" * (2 * limit)]  # in a list: pickled inline, not staged in the object store
        with pytest.raises(MessageTooLargeError, match=r"message limit of .* bytes.*max_message_bytes") as info:
            blob.echo.remote(too_big)
        assert "Blob.echo" in str(info.value)
        # The actor and the connection are untouched: nothing was sent.
        assert actorhub.get(blob.ping.remote()) == 1
        # A large result of any type travels through the object store, as in Ray.
        assert actorhub.get(blob.make.remote(2 * limit)) == [b"y" * 2 * limit]
        # The same value as an object has no such limit, nor has a long string or bytes,
        # which travel through the object store.
        assert actorhub.get(blob.echo.remote(actorhub.put(too_big))) == too_big
        assert actorhub.get(blob.echo.remote(too_big[0])) == too_big[0]
        assert actorhub.get(blob.echo.remote(b"z" * 2 * limit)) == b"z" * 2 * limit
    finally:
        actorhub.shutdown()
