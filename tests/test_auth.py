"""Every server checks the cluster token; the channels that send it."""

from __future__ import annotations

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
