"""Issue 8, wire fuzzing: every RPC of every service answers garbage with a status and keeps serving.

One real local cluster (hub, node agent, zygote, one actor's worker, and this test process as
its driver). Every method of every service in the protos, enumerated from their descriptors
so that a new RPC (or a new service, see `test_every_service_has_a_target`) is covered without
a change here, gets from hypothesis:
  (a) random bytes as its request body (sent with identity serializers), and
  (b) well-typed but malformed messages built from its request type's descriptor: extreme and
      negative integers, NaN and infinities, empty, huge and odd unicode strings, random bytes,
      unknown enum values, nested messages, repeated fields with thousands of entries, unknown
      ids, and some of the cluster's real ids and addresses where aiming at them is harmless.
Each call must end with a gRPC status code (any code: OK, INVALID_ARGUMENT, UNKNOWN from gRPC's
asyncio server for a body that does not parse, DEADLINE_EXCEEDED for a long poll or a
stream...) no later than its short deadline allows, and after each example the service must
answer a known-good request and no process of the cluster may have died. Calls without the
token, with an empty one or with a wrong one, to every method (the destructive ones included),
must all be refused with UNAUTHENTICATED. Last, the cluster must still place and run a new
actor. With `-s`, the module prints the status codes each method answered, and the first
details of each code other than OK.

ACTORHUB_FUZZ_EXAMPLES scales the number of examples per method (default 6, for CI's budget).
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import pickle
import pkgutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from _procs import children
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st

import actorhub
import actorhub._proto.v1 as _proto_package
from actorhub._proto.v1 import common_pb2, hub_pb2, node_pb2, worker_pb2
from actorhub.cluster.session import Session
from actorhub.runtime.runtime import current
from actorhub.wire.transport import open_channel

# A fuzzed call's deadline: long polls and streams just run into it.
CALL_DEADLINE_S = 2.0
# How much later than its deadline a call may end on a loaded 2-core machine before it counts
# as hung: gRPC's client enforces deadlines itself, so this only catches a broken client path.
HANG_SLACK_S = 20.0
# The known-good requests after each example get longer: the machine is shared.
CHECK_DEADLINE_S = 15.0

_EXAMPLES = int(os.environ.get("ACTORHUB_FUZZ_EXAMPLES", "6"))

_SETTINGS = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    print_blob=True,
    database=None,
    # No shrinking: every example is real RPCs against live processes, and once one of them
    # has crashed or hung every further example fails the same way; print_blob replays it.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # conftest's autouse fixtures; nothing here is per example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)

# -- the services and the methods -------------------------------------------------------------


def _services() -> dict[str, ServiceDescriptor]:
    """Every service of every generated proto module, by full name (a new .proto is included)."""
    found: dict[str, ServiceDescriptor] = {}
    for info in pkgutil.iter_modules(_proto_package.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{_proto_package.__name__}.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return found


SERVICES = _services()

# Where each service is served in the test's cluster: the Worker service by an actor's worker
# and by every driver (this process).
TARGETS: dict[str, tuple[str, ...]] = {
    "actorhub.v1.Hub": ("hub",),
    "actorhub.v1.Node": ("node",),
    "actorhub.v1.Worker": ("worker", "driver"),
    "actorhub.v1.RuntimeEnvPackages": ("hub",),
}

# Never fuzzed with the token: any request that parses is a legitimate order to end the
# cluster the test runs on (Empty parses from most bytes: unknown fields are kept). Without the
# token they are still called, and must be refused (test_calls_without_the_token_are_refused).
EXCLUDED = {
    "actorhub.v1.Hub.Shutdown": "stops every node agent and the hub",
    "actorhub.v1.Node.Shutdown": "stops the node agent and all of its workers",
}

# Fuzzed, but never with the cluster's real ids in the request (random ids cannot match them):
# aimed at the test's own actor, node or job these legitimately end processes or the cluster.
NO_REAL_IDS = {
    # kills the test's actor
    "actorhub.v1.Hub.KillActor": "kills the actor named",
    "actorhub.v1.Node.KillWorker": "SIGKILLs the named actor's worker",
    # the hub takes the test's actor for dead (and restarts or buries it)
    "actorhub.v1.Hub.ReportWorkerExit": "reports the named actor's worker as exited",
    # a new agent under the real node's id: the hub takes the real node (and its actor) as dead
    "actorhub.v1.Hub.RegisterNode": "re-registers the named node as a new agent",
    # a second lease on the real node or job: when it ends, the node is dead, or the job (which
    # owns the cluster) is over and the hub shuts the cluster down
    "actorhub.v1.Hub.NodeLease": "its end is the named node's death",
    "actorhub.v1.Hub.JobLease": "its end is the named job's end, and the test's job owns the cluster",
    # lying about the real node's lent CPUs legitimately starves its placements
    "actorhub.v1.Hub.ReportLentCpus": "sets what the named node lends to tasks",
    # another incarnation of the test's actor rebinds the node's record of its worker
    "actorhub.v1.Node.StartActor": "takes a worker for the named actor",
}
# Neutralised field by field (see `_dangerous`): RegisterJob with owns_cluster=True registers a
# job that never opens its lease, so after 10 s the hub ends it and, as it owns the cluster,
# shuts the cluster down; a CallStream call of `__ray_terminate__` to the test's actor ends it
# for good (the hub kills it without restart).
_TERMINATE = "__ray_terminate__"


def _methods() -> Iterator[MethodDescriptor]:
    for service in SERVICES.values():
        yield from service.methods


def _fuzz_params() -> list[Any]:
    params = []
    for method in _methods():
        for target in TARGETS.get(method.containing_service.full_name, ()):
            marks = []
            if method.full_name in EXCLUDED:
                marks.append(pytest.mark.skip(reason=f"excluded: {EXCLUDED[method.full_name]}"))
            marks.extend(_KNOWN_BUGS.get((target, method.full_name), ()))
            params.append(pytest.param(target, method.full_name, marks=marks,
                                       id=f"{target}-{method.containing_service.name}.{method.name}"))
    return params


# Servers found to crash, hang, or answer with something that is not a status: (target, method)
# -> xfail(strict=True) marks naming the bug.
_KNOWN_BUGS: dict[tuple[str, str], list[pytest.MarkDecorator]] = {}


def _method(full_name: str) -> MethodDescriptor:
    service, _, name = full_name.rpartition(".")
    return SERVICES[service].methods_by_name[name]


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


_EMPTY_IN = {"request_serializer": common_pb2.Empty.SerializeToString}


# -- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    token: str
    addresses: dict[str, str]  # target -> address
    pids: dict[str, int]  # process -> pid: every one must stay alive
    actor_id: str
    actor_pid: int
    real_ids: list[str]  # of the cluster's processes (and their addresses): NO_REAL_IDS never name them
    namespace: str
    object_ids: list[str]  # objects the driver owns (one inline, one in the node's store)
    store_ids: list[str]  # the node store's ids of them
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    codes: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    details: dict[tuple[str, str], str] = field(default_factory=dict)  # (method, code) -> first details

    def channel(self, target: str) -> grpc.Channel:
        if target not in self.channels:
            self.channels[target] = open_channel(self.addresses[target], self.token)
        return self.channels[target]


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture(scope="module")
def fuzz_cluster(shared_cluster: actorhub.ClusterContext) -> Iterator[Cluster]:
    context = shared_cluster
    session = Session(Path(context.session_dir))

    @actorhub.remote
    class Target:
        def ping(self, *args: Any, **kwargs: Any) -> int:
            return 1

    actor = Target.remote()  # type: ignore[attr-defined]
    assert actorhub.get(actor.ping.remote(), timeout=60) == 1
    small = actorhub.put(b"owned by the driver")
    large = actorhub.put(np.zeros(400_000, dtype=np.uint8))  # in the node's store
    token = session.token
    hub = open_channel(context.address, token)
    status = hub.unary_unary(
        "/actorhub.v1.Hub/GetClusterStatus", **_EMPTY_IN, response_deserializer=hub_pb2.ClusterStatus.FromString
    )(common_pb2.Empty(), timeout=CHECK_DEADLINE_S)
    hub.close()
    info = next(a for a in status.actors if a.actor_id == actor.actor_id)
    node = next(n for n in status.nodes if n.node_id == context.node_id)
    driver_address = current().address
    node_channel = open_channel(node.address, token)
    stored = node_channel.unary_unary(
        "/actorhub.v1.Node/ListObjects", **_EMPTY_IN, response_deserializer=node_pb2.ListObjectsReply.FromString
    )(common_pb2.Empty(), timeout=CHECK_DEADLINE_S)
    node_channel.close()
    hub_pid = int(session.pid_file("hub").read_text().strip())
    pids = {"hub": hub_pid, "node agent": node.pid, "actor's worker": info.pid}
    # The node agent's one child is its zygote (forked, so it has the agent's command line);
    # workers are the zygote's children.
    for child in sorted(children(node.pid)):
        pids[f"zygote {child}"] = child
    assert any(name.startswith("zygote") for name in pids), "the node agent's zygote was not found"
    cluster = Cluster(
        token=token,
        addresses={"hub": context.address, "node": node.address, "worker": info.address, "driver": driver_address},
        pids=pids,
        actor_id=actor.actor_id,
        actor_pid=info.pid,
        real_ids=[actor.actor_id, context.node_id, context.job_id, context.address, node.address, info.address,
                  driver_address],
        namespace=context.namespace,
        object_ids=[small.hex(), large.hex()],
        store_ids=[o.object_id for o in stored.objects],
    )
    try:
        yield cluster
    finally:
        _report(cluster)
        for channel in cluster.channels.values():
            channel.close()
        del actor, small, large


def _report(cluster: Cluster) -> None:
    """What each method answered, printed (pytest -s shows it): UNKNOWN is an unhandled exception."""
    lines = ["status codes seen per method:"]
    for method, codes in sorted(cluster.codes.items()):
        lines.append(f"  {method}: " + ", ".join(f"{c} x{n}" for c, n in sorted(codes.items())))
    for (method, code), details in sorted(cluster.details.items()):
        lines.append(f"  {method} {code}: {details[:200]}")
    print("\n".join(lines))


# -- strategies from descriptors --------------------------------------------------------------

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

_ODD_STRINGS = [
    "", " ", "\x00", "\n", "-1", "0", "é☃𝄞\u202e", "%s%n{}", "../../../etc/passwd", "a" * 4096,
    "localhost:1", "127.0.0.1:0", "[::1]:65536", "unix:/nonexistent/socket", "ipv4:127.0.0.1:1",
    "ping", "__ray_ready__", "__init__", "__class__", "no_such_method",
]
_ODD_BYTES = [
    b"", b"\x00", b"\x80\x04N.", pickle.dumps(((), {}), protocol=5), pickle.dumps(((1,), {"x": 2}), protocol=5),
]
_ODD_FLOATS = [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 2.0**63]


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    special = sorted({v for v in (0, 1, -1, lo, hi, hi - 1, lo + 1, 2**31 - 1, 2**31, 2**32 - 1, 2**53 + 1)
                      if lo <= v <= hi})
    return st.one_of(st.sampled_from(special), st.integers(lo, hi))


def _strings(pool: tuple[str, ...]) -> st.SearchStrategy[str]:
    branches = [
        st.text(max_size=24),
        st.sampled_from(_ODD_STRINGS),
        st.tuples(st.text(min_size=1, max_size=3), st.integers(1000, 20_000)).map(lambda t: t[0] * t[1]),
    ]
    if pool:
        branches.append(st.sampled_from(pool))
    return st.one_of(branches)


def _bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from(_ODD_BYTES),
        st.tuples(st.binary(min_size=1, max_size=8), st.integers(1000, 100_000)).map(lambda t: t[0] * t[1]),
    )


def _scalar(fd: FieldDescriptor, depth: int, pool: tuple[str, ...]) -> st.SearchStrategy[Any]:
    t = fd.type
    if t in _INT_RANGES:
        return _ints(*_INT_RANGES[t])
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.one_of(st.sampled_from(_ODD_FLOATS), st.floats())
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.one_of(st.sampled_from([0.0, math.nan, math.inf, -math.inf, -1.0]), st.floats(width=32))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return _strings(pool)
    if t == FieldDescriptor.TYPE_BYTES:
        return _bytes()
    if t == FieldDescriptor.TYPE_ENUM:
        # proto3 enums are open: any int32 is a valid value on the wire
        return st.one_of(st.sampled_from([v.number for v in fd.enum_type.values]), _ints(-(2**31), 2**31 - 1))
    if t == FieldDescriptor.TYPE_MESSAGE:
        return messages(fd.message_type, depth + 1, pool)
    raise AssertionError(f"no strategy for field {fd.full_name} of type {t}")


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _field(fd: FieldDescriptor, depth: int, pool: tuple[str, ...]) -> st.SearchStrategy[Any]:
    if _is_map(fd):
        key = _scalar(fd.message_type.fields_by_name["key"], depth, pool)
        value = _scalar(fd.message_type.fields_by_name["value"], depth, pool)
        return st.dictionaries(key, value, max_size=6)
    one = _scalar(fd, depth, pool)
    if fd.is_repeated:
        return st.one_of(
            st.lists(one, max_size=6),
            # Many entries: one small value repeated (drawing thousands, or thousands of huge
            # ones, makes a single example take seconds and hundreds of megabytes).
            st.tuples(_small(fd, pool), st.integers(100, 5000)).map(lambda t: [t[0]] * t[1]),
        )
    return one


def _small(fd: FieldDescriptor, pool: tuple[str, ...]) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return st.builds(_message_class(fd.message_type))
    if fd.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=8), st.sampled_from(pool or ("",)))
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=8)
    return _scalar(fd, _MAX_DEPTH, pool)


_MAX_DEPTH = 3


@functools.cache
def messages(descriptor: Descriptor, depth: int, pool: tuple[str, ...]) -> st.SearchStrategy[Message]:
    """Messages of this type with any subset of their fields set to hostile values."""
    cls = _message_class(descriptor)
    if depth > _MAX_DEPTH or not descriptor.fields:
        return st.builds(cls)
    optional = {fd.name: _field(fd, depth, pool) for fd in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(functools.partial(_build, cls))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    fields = cls.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        fd = fields[name]
        if _is_map(fd):
            target = getattr(msg, name)
            composite = fd.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
            for k, v in value.items():
                if composite:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif fd.is_repeated:
            getattr(msg, name).extend(value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


# Fuzzed without the driver's object ids: deleting its stored object is legitimate, and would
# leave nothing for the reads aimed at it in later tests (_AIMS).
KEEP_OBJECTS = {"actorhub.v1.Node.DeleteObjects", "actorhub.v1.Node.ReserveObject", "actorhub.v1.Node.WriteObject"}


def _pool(cluster: Cluster, method: MethodDescriptor) -> tuple[str, ...]:
    """Real strings the typed fuzz may use for this method: ids and addresses of the cluster,
    except where naming them is a legitimate order to end something (NO_REAL_IDS)."""
    pool = [cluster.namespace]
    if method.full_name not in NO_REAL_IDS:
        pool += cluster.real_ids
    if method.full_name not in KEEP_OBJECTS:
        pool += cluster.object_ids + cluster.store_ids
    return tuple(dict.fromkeys(pool))


def _count(method: MethodDescriptor) -> st.SearchStrategy[int]:
    """How many request messages a call sends."""
    return st.integers(1, 4) if method.client_streaming else st.just(1)


# Some malformed requests are aimed at what the cluster really has, so that they get past the
# first lookup into deeper code: (cluster, target, the call's first message, which of the
# cluster's ids to use) -> None.
_Aim = Callable[[Cluster, str, Any, int], None]


def _aim_call_stream(cluster: Cluster, target: str, msg: Any, i: int) -> None:
    if target == "worker":  # the test's actor, in the incarnation it runs
        msg.actor_id, msg.incarnation = cluster.actor_id, 0


def _aim_at_store(cluster: Cluster, target: str, msg: Any, i: int) -> None:
    msg.object_id = cluster.store_ids[i % len(cluster.store_ids)] if cluster.store_ids else ""
    if msg.DESCRIPTOR.name == "PullObjectRequest":
        msg.source = cluster.addresses["node"]  # a pull from the node itself


def _aim_at_objects(cluster: Cluster, target: str, msg: Any, i: int) -> None:
    if target == "driver":
        msg.object_ids.extend(cluster.object_ids)


_AIMS: dict[str, _Aim] = {
    "actorhub.v1.Worker.CallStream": _aim_call_stream,
    "actorhub.v1.Worker.GetObject": lambda c, t, m, i: setattr(m, "object_id", c.object_ids[i % len(c.object_ids)]),
    "actorhub.v1.Worker.AddBorrowers": _aim_at_objects,
    "actorhub.v1.Worker.RemoveBorrowers": _aim_at_objects,
    "actorhub.v1.Worker.HeldStoreIds": lambda c, t, m, i: m.store_ids.extend(c.store_ids),
    "actorhub.v1.Hub.WaitActor": lambda c, t, m, i: setattr(m, "actor_id", c.actor_id),
    "actorhub.v1.Node.OpenObject": _aim_at_store,
    "actorhub.v1.Node.ReadObject": _aim_at_store,
    "actorhub.v1.Node.PullObject": _aim_at_store,
}


def typed_requests(cluster: Cluster, target: str, method: MethodDescriptor) -> st.SearchStrategy[list[bytes]]:
    one = messages(method.input_type, 0, _pool(cluster, method))
    aim = _AIMS.get(method.full_name)
    aims = st.sampled_from([0, 1, None]) if aim is not None else st.none()  # mostly aimed

    def serialize(drawn: tuple[int | None, list[Message]]) -> list[bytes]:
        aimed, msgs = drawn
        if aim is not None and aimed is not None:
            aim(cluster, target, msgs[0], aimed)
        return [_neutralise(method, m).SerializeToString() for m in msgs]

    lists = _count(method).flatmap(lambda n: st.lists(one, min_size=n, max_size=n))
    return st.tuples(aims, lists).map(serialize)


def raw_requests(method: MethodDescriptor) -> st.SearchStrategy[list[bytes]]:
    one = st.one_of(
        st.binary(max_size=256),
        st.tuples(st.binary(min_size=1, max_size=16), st.integers(100, 50_000)).map(lambda t: t[0] * t[1]),
    )
    return _count(method).flatmap(lambda n: st.lists(one, min_size=n, max_size=n))


# -- what must never be sent ------------------------------------------------------------------


def _neutralise(method: MethodDescriptor, msg: Message) -> Message:
    if method.full_name == "actorhub.v1.Hub.RegisterJob":
        msg.owns_cluster = False  # type: ignore[attr-defined]
    if method.full_name == "actorhub.v1.Worker.CallStream":
        for call in msg.calls:  # type: ignore[attr-defined]
            if call.method == _TERMINATE:
                call.method = "__ray_terminate"
    return msg


def _dangerous(cluster: Cluster, method: MethodDescriptor, bodies: list[bytes]) -> bool:
    """Whether the server would take these bodies as a legitimate order to end something of the
    test's cluster (they are parsed here as the server will parse them)."""
    cls = _message_class(method.input_type)
    for body in bodies:
        if method.full_name in NO_REAL_IDS and any(i.encode() in body for i in cluster.real_ids):
            return True
        try:
            msg = cls.FromString(body)
        except DecodeError:
            continue  # refused before the handler runs
        if method.full_name == "actorhub.v1.Hub.RegisterJob" and msg.owns_cluster:  # type: ignore[attr-defined]
            return True
        if method.full_name == "actorhub.v1.Worker.CallStream" and any(
            c.method == _TERMINATE for c in msg.calls  # type: ignore[attr-defined]
        ):
            return True
    return False


# -- calling and checking ---------------------------------------------------------------------


def call_raw(
    channel: grpc.Channel, method: MethodDescriptor, bodies: list[bytes], timeout: float
) -> grpc.Call | grpc.RpcError:
    """Send the bodies as they are; returns what carries the call's end (code(), details())."""
    path = _path(method)
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path)(iter(bodies), timeout=timeout)
            for _ in call:
                pass
            return call
        if method.server_streaming:
            call = channel.unary_stream(path)(bodies[0], timeout=timeout)
            for _ in call:
                pass
            return call
        if method.client_streaming:
            _, call = channel.stream_unary(path).with_call(iter(bodies), timeout=timeout)
            return call
        _, call = channel.unary_unary(path).with_call(bodies[0], timeout=timeout)
        return call
    except grpc.RpcError as e:
        return e


def _send_and_check(cluster: Cluster, target: str, method: MethodDescriptor, bodies: list[bytes]) -> None:
    if _dangerous(cluster, method, bodies):
        reject()
    channel = cluster.channel(target)
    started = time.monotonic()
    ended = call_raw(channel, method, bodies, CALL_DEADLINE_S)
    elapsed = time.monotonic() - started
    code = ended.code()  # type: ignore[union-attr]
    assert isinstance(code, grpc.StatusCode), f"{method.full_name} at the {target} ended without a status: {ended!r}"
    assert elapsed < CALL_DEADLINE_S + HANG_SLACK_S, (
        f"{method.full_name} at the {target} took {elapsed:.1f} s with a {CALL_DEADLINE_S} s deadline"
    )
    where = f"{target}:{method.full_name}"
    cluster.codes[where][code.name] += 1
    details = str(ended.details())  # type: ignore[union-attr]
    if code is not grpc.StatusCode.OK and "DecodeError" not in details:  # not a body that failed to parse
        cluster.details.setdefault((where, code.name), details)
    check_serving(cluster, target)


_KNOWN_GOOD: dict[str, tuple[str, Callable[[bytes], Any]]] = {
    "hub": ("/actorhub.v1.Hub/GetClusterStatus", hub_pb2.ClusterStatus.FromString),
    "node": ("/actorhub.v1.Node/GetNodeInfo", node_pb2.NodeInfo.FromString),
    "worker": ("/actorhub.v1.Worker/Ping", common_pb2.Empty.FromString),
    "driver": ("/actorhub.v1.Worker/Ping", common_pb2.Empty.FromString),
}


def check_serving(cluster: Cluster, target: str) -> None:
    """The target still answers a known-good request, and no process of the cluster died."""
    path, parse = _KNOWN_GOOD[target]
    try:
        cluster.channel(target).unary_unary(path, **_EMPTY_IN, response_deserializer=parse)(
            common_pb2.Empty(), timeout=CHECK_DEADLINE_S)
    except grpc.RpcError as e:
        pytest.fail(f"the {target} no longer answers {path}: {e.code()} {e.details()}")
    dead = [f"{name} (pid {pid})" for name, pid in cluster.pids.items() if not _process_alive(pid)]
    assert not dead, f"cluster processes died: {', '.join(dead)}"


def check_actor_alive(cluster: Cluster) -> None:
    """The hub still has the test's actor alive, in its first process."""
    status = cluster.channel("hub").unary_unary(
        "/actorhub.v1.Hub/GetClusterStatus", **_EMPTY_IN, response_deserializer=hub_pb2.ClusterStatus.FromString
    )(common_pb2.Empty(), timeout=CHECK_DEADLINE_S)
    info = next(a for a in status.actors if a.actor_id == cluster.actor_id)
    assert info.state == common_pb2.ACTOR_STATE_ALIVE and info.pid == cluster.actor_pid, info


# -- the tests --------------------------------------------------------------------------------


def test_every_service_has_a_target() -> None:
    # A new service must be given a process serving it here, or it would go unfuzzed.
    assert set(SERVICES) == set(TARGETS), "TARGETS must name where each service is served"
    assert set(EXCLUDED) | set(NO_REAL_IDS) | KEEP_OBJECTS | set(_AIMS) <= {m.full_name for m in _methods()}, (
        "stale exclusions"
    )


@pytest.mark.parametrize(("target", "method_name"), _fuzz_params())
def test_random_bytes(fuzz_cluster: Cluster, target: str, method_name: str) -> None:
    method = _method(method_name)

    @_SETTINGS
    @given(raw_requests(method))
    def fuzz(bodies: list[bytes]) -> None:
        _send_and_check(fuzz_cluster, target, method, bodies)

    fuzz()
    check_actor_alive(fuzz_cluster)


@pytest.mark.parametrize(("target", "method_name"), _fuzz_params())
def test_malformed_messages(fuzz_cluster: Cluster, target: str, method_name: str) -> None:
    method = _method(method_name)

    @settings(_SETTINGS, max_examples=2 * _EXAMPLES)
    @given(typed_requests(fuzz_cluster, target, method))
    def fuzz(bodies: list[bytes]) -> None:
        _send_and_check(fuzz_cluster, target, method, bodies)

    fuzz()
    check_actor_alive(fuzz_cluster)


def _unauthenticated(address: str, token: str | None) -> grpc.Channel:
    return grpc.insecure_channel(address) if token is None else open_channel(address, token)


# After the fuzzing: were the token check broken, the Shutdowns sent here would end the cluster
# (and the last test, which needs it, would fail).
@pytest.mark.parametrize("target", ["hub", "node", "worker", "driver"])
@pytest.mark.parametrize("token", [None, "0" * 64, ""], ids=["no-token", "wrong-token", "empty-token"])
def test_calls_without_the_token_are_refused(fuzz_cluster: Cluster, target: str, token: str | None) -> None:
    services = [s for s, targets in TARGETS.items() if target in targets]
    methods = [m for s in services for m in SERVICES[s].methods]  # destructive ones included
    channel = _unauthenticated(fuzz_cluster.addresses[target], token)

    @_SETTINGS
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        for method in methods:
            bodies = data.draw(
                st.one_of(raw_requests(method), typed_requests(fuzz_cluster, target, method)), label=method.name
            )
            ended = call_raw(channel, method, bodies, CALL_DEADLINE_S)
            assert ended.code() is grpc.StatusCode.UNAUTHENTICATED, (  # type: ignore[union-attr]
                f"{method.full_name} at the {target} with token {token!r}: "
                f"{ended.code()} {ended.details()}"  # type: ignore[union-attr]
            )
        check_serving(fuzz_cluster, target)

    try:
        fuzz()
    finally:
        channel.close()
    check_actor_alive(fuzz_cluster)


def test_error_details_quoting_a_huge_id_are_cut_to_fit_grpcs_limits(fuzz_cluster: Cluster) -> None:
    # Quoted whole, a 20,000-character name overflowed gRPC's 16 KiB trailer limit and the
    # caller saw RESOURCE_EXHAUSTED instead of the real answer.
    with pytest.raises(ValueError, match="xxxx"):
        actorhub.get_actor("x" * 20_000)
    wait = fuzz_cluster.channel("hub").unary_unary(
        "/actorhub.v1.Hub/WaitActor", request_serializer=hub_pb2.WaitActorRequest.SerializeToString,
        response_deserializer=common_pb2.ActorInfo.FromString,
    )
    with pytest.raises(grpc.RpcError) as info:
        wait(hub_pb2.WaitActorRequest(actor_id="y" * 50_000, timeout_s=0.1), timeout=CHECK_DEADLINE_S)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(info.value.details() or "") < 2_200 and "characters cut" in (info.value.details() or "")


def test_a_pull_that_names_no_source_is_an_invalid_argument(fuzz_cluster: Cluster) -> None:
    pull = fuzz_cluster.channel("node").unary_unary(
        "/actorhub.v1.Node/PullObject", request_serializer=node_pb2.PullObjectRequest.SerializeToString,
        response_deserializer=common_pb2.Empty.FromString,
    )
    with pytest.raises(grpc.RpcError) as info:
        pull(node_pb2.PullObjectRequest(object_id="nowhere.p1", source=""), timeout=CHECK_DEADLINE_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_object_gone_from_the_store_reads_as_lost_not_as_a_server_error(fuzz_cluster: Cluster) -> None:
    ref = actorhub.put(np.ones(400_000, dtype=np.uint8))
    store_id = current().objects.store_id_of(ref.hex())
    assert store_id
    fuzz_cluster.channel("node").unary_unary(
        "/actorhub.v1.Node/DeleteObjects", request_serializer=node_pb2.DeleteObjectsRequest.SerializeToString,
        response_deserializer=common_pb2.Empty.FromString,
    )(node_pb2.DeleteObjectsRequest(object_ids=[store_id]), timeout=CHECK_DEADLINE_S)
    # A reader with no node gets the value inline, read from the store by the owner: gone.
    reply = fuzz_cluster.channel("driver").unary_unary(
        "/actorhub.v1.Worker/GetObject", request_serializer=worker_pb2.GetObjectRequest.SerializeToString,
        response_deserializer=worker_pb2.GetObjectReply.FromString,
    )(worker_pb2.GetObjectRequest(object_id=ref.hex(), timeout_s=1), timeout=CHECK_DEADLINE_S)
    # The writer's own pin (taken at its seal) may keep the copy readable; either way the
    # owner answers (it used to fail the call with UNKNOWN from an unhandled ObjectLostError).
    assert reply.ready and (reply.value or reply.error.kind == common_pb2.ERROR_KIND_OBJECT_LOST), reply
    del ref


def test_a_node_that_registers_and_never_opens_its_lease_is_taken_as_dead(fuzz_cluster: Cluster) -> None:
    hub = fuzz_cluster.channel("hub")
    hub.unary_unary(
        "/actorhub.v1.Hub/RegisterNode", request_serializer=hub_pb2.RegisterNodeRequest.SerializeToString,
        response_deserializer=hub_pb2.RegisterNodeReply.FromString,
    )(hub_pb2.RegisterNodeRequest(node_id="ghost-node", address="127.0.0.1:9", num_cpus=1, pid=1),
      timeout=CHECK_DEADLINE_S)
    status = hub.unary_unary(
        "/actorhub.v1.Hub/GetClusterStatus", **_EMPTY_IN, response_deserializer=hub_pb2.ClusterStatus.FromString
    )

    def ghost_alive() -> bool:
        return any(n.alive for n in status(common_pb2.Empty(), timeout=CHECK_DEADLINE_S).nodes
                   if n.node_id == "ghost-node")

    assert ghost_alive()
    deadline = time.monotonic() + 30  # it gets 10 s to open its lease, as a driver does
    while ghost_alive():
        assert time.monotonic() < deadline, "a node that never opened its lease stayed alive"
        time.sleep(0.5)


def test_the_cluster_still_works_after_the_fuzzing(fuzz_cluster: Cluster) -> None:
    """Last: after all of the above, the cluster still places and runs a new actor, carries its
    calls and their large values, and still has the first actor in its first process."""

    @actorhub.remote
    class Fresh:
        def echo(self, value: Any) -> Any:
            return value

    fresh = Fresh.remote()  # type: ignore[attr-defined]
    assert actorhub.get(fresh.echo.remote(41), timeout=60) == 41
    large = np.arange(100_000)
    assert (actorhub.get(fresh.echo.remote(large), timeout=60) == large).all()
    check_actor_alive(fuzz_cluster)
    for target in _KNOWN_GOOD:
        check_serving(fuzz_cluster, target)
