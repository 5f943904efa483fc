"""The gateway: named typed actors called over HTTP/JSON (urllib) and gRPC (Python and Node.js
clients), errors mapped to statuses, the cluster token required, an OpenAPI document."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from openapi_spec_validator import validate

from actorhub._proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "actorhub.cli"]
NS = "gw"
# The Node client's packages, installed once into ~/.cache/actorhub-tests (from the npm registry).
NPM_PACKAGES = ("@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1")

SERVICE = """
import os, sys, time
import pydantic
import actorhub

class Item(pydantic.BaseModel):
    name: str
    qty: int

class OutOfStock(Exception):
    pass

@actorhub.remote(typed=True)
class Inventory:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def add(self, n: int, *, times: int = 1) -> int:
        return n * times

    def put(self, item: Item) -> Item:
        self.items[item.name] = item
        return Item(name=item.name.upper(), qty=item.qty * 2)

    def take(self, name: str) -> Item:
        if name not in self.items:
            raise OutOfStock(f"no {name} in stock")
        return self.items.pop(name)

    def broken(self) -> int:
        return "not an int"  # type: ignore[return-value]

    def pid(self) -> int:
        return os.getpid()

    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def _hidden(self) -> int:
        return 0

@actorhub.remote
class Plain:
    def add(self, n: int) -> int:
        return n

actorhub.init(address=sys.argv[1], namespace="gw")
inventory = Inventory.options(name="inventory", lifetime="detached").remote()
phoenix = Inventory.options(name="phoenix", lifetime="detached", max_restarts=1).remote()
plain = Plain.options(name="plain", lifetime="detached").remote()
actorhub.get([inventory.pid.remote(), phoenix.pid.remote(), plain.add.remote(1)])
"""


@dataclass(frozen=True)
class Head:
    address: str
    session: Path
    token: str
    http: str
    grpc: str


def _cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory, allowed_process_roots: set[int]) -> Iterator[Head]:
    """`actorhub start --head --gateway-port 0` with the typed service actors in namespace "gw"."""
    root = tmp_path_factory.mktemp("gateway-sessions")
    old = os.environ.get("ACTORHUB_SESSION_ROOT")
    os.environ["ACTORHUB_SESSION_ROOT"] = str(root)
    roots: set[int] = set()
    try:
        started = _cli("start", "--head", "--num-cpus", "2", "--include-dashboard", "false", "--gateway-port", "0")
        assert started.returncode == 0, started.stderr
        session = Path(re.search(r"session dir:\s+(\S+)", started.stdout).group(1))  # type: ignore[union-attr]
        roots = {int(p.read_text()) for p in session.glob("*.pid")}
        allowed_process_roots.update(roots)
        gateway = re.search(r"gateway:\s+http://(\S+)\s+gRPC (\S+)", started.stdout)
        assert gateway is not None, started.stdout
        address = re.search(r"hub address:\s+(\S+)", started.stdout).group(1)  # type: ignore[union-attr]
        script = root / "service.py"
        script.write_text(SERVICE)
        made = subprocess.run([sys.executable, str(script), address], timeout=90, cwd=REPO, capture_output=True,
                              text=True)
        assert made.returncode == 0, made.stderr
        yield Head(address, session, (session / "token").read_text().strip(), gateway.group(1), gateway.group(2))
    finally:
        stopped = _cli("stop")
        allowed_process_roots.difference_update(roots)
        if old is None:
            os.environ.pop("ACTORHUB_SESSION_ROOT", None)
        else:
            os.environ["ACTORHUB_SESSION_ROOT"] = old
    assert stopped.returncode == 0, stopped.stderr
    assert not [p for p in roots if Path(f"/proc/{p}").exists() and _state(p) != "Z"], "a process outlived stop"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def post(head: Head, path: str, body: object = None, *, token: str | None = "", raw: bytes | None = None,
         http: str | None = None) -> tuple[int, Any]:
    """(status, decoded JSON) of a POST (or a GET when there is no body)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{http or head.http}{path}", data=data,
                                     method="GET" if data is None else "POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token or head.token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def call(head: Head, actor: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    return post(head, f"/v1/namespaces/{NS}/actors/{actor}/{method}", {"args": list(args), "kwargs": kwargs})


def test_calls_with_json_bodies_and_models(head: Head) -> None:
    assert call(head, "inventory", "add", 4, times=3) == (200, {"result": 12})
    # A JSON object for a model parameter arrives as the model; a returned model goes back as its JSON.
    assert call(head, "inventory", "put", {"name": "bolt", "qty": 3}) == (200, {"result": {"name": "BOLT", "qty": 6}})
    assert call(head, "inventory", "take", "bolt") == (200, {"result": {"name": "bolt", "qty": 3}})
    # No body at all: no arguments.
    status, body = post(head, f"/v1/namespaces/{NS}/actors/inventory/pid", raw=b"")
    assert status == 200 and isinstance(body["result"], int)
    status, listing = post(head, f"/v1/namespaces/{NS}/actors")
    assert status == 200
    actors = {a["name"]: [m["name"] for m in a["methods"]] for a in listing["actors"]}
    # Untyped actors are not exposed; nor are private methods.
    assert actors["inventory"] == ["add", "broken", "nap", "pid", "put", "take"] and "plain" not in actors


def test_invalid_arguments_are_400_with_pydantics_message(head: Head) -> None:
    status, body = call(head, "inventory", "add", "4")  # strict, as for a Python caller: no coercion
    assert status == 400 and body["error"]["type"] == "ArgumentValidationError"
    assert "argument 'n'" in body["error"]["message"] and "Input should be a valid integer" in body["error"]["message"]
    status, body = call(head, "inventory", "put", {"name": "nut", "qty": "many"})
    assert status == 400 and re.search(r"qty\s+Input should be a valid integer", body["error"]["message"])
    status, body = call(head, "inventory", "add", 1, 2)
    assert status == 400 and "too many positional arguments" in body["error"]["message"]
    status, body = call(head, "inventory", "add", 1, speed=2)
    assert status == 400 and "unexpected keyword argument 'speed'" in body["error"]["message"]
    path = f"/v1/namespaces/{NS}/actors/inventory/add"
    for raw, message in [(b"{not json", "not JSON"), (b"[1]", "must be a JSON object"),
                         (b'{"args": 1}', "args must be a JSON array"), (b'{"argz": []}', "unknown field(s) argz")]:
        status, body = post(head, path, raw=raw)
        assert (status, body["error"]["type"]) == (400, "InvalidRequest") and message in body["error"]["message"]
    status, body = call(head, "inventory", "take", "nut")  # the refused put did not run
    assert (status, body["error"]["type"]) == (500, "OutOfStock")


def test_unknown_actors_and_methods_are_404(head: Head) -> None:
    status, body = call(head, "ghost", "add", 1)
    assert (status, body["error"]["type"]) == (404, "ActorNotFoundError") and "'ghost'" in body["error"]["message"]
    for actor, method in [("inventory", "remove"), ("inventory", "_hidden"), ("plain", "add")]:
        status, body = call(head, actor, method, 1)
        assert (status, body["error"]["type"]) == (404, "MethodNotFoundError"), (actor, method, body)
    status, body = post(head, "/v1/namespaces/_actorhub/actors/desk/run", {})
    assert status == 404 and "reserved" in body["error"]["message"]


def test_an_exception_in_the_method_is_500_with_its_type(head: Head) -> None:
    status, body = call(head, "inventory", "take", "unicorn")
    assert status == 500 and body["error"] == {"type": "OutOfStock", "message": "no unicorn in stock"}
    status, body = call(head, "inventory", "broken")
    assert status == 500 and body["error"]["type"] == "ReturnValidationError"
    assert call(head, "inventory", "add", 1) == (200, {"result": 1})  # the actor lives on


def test_the_cluster_token_is_required(head: Head) -> None:
    for token in (None, "not-the-token"):
        for path, body in [(f"/v1/namespaces/{NS}/actors/inventory/add", {"args": [1]}), ("/v1/openapi.json", None),
                           (f"/v1/namespaces/{NS}/actors", None)]:
            status, reply = post(head, path, body, token=token)
            assert status == 401 and reply["error"]["type"] == "Unauthenticated", (token, path)


def test_openapi_document_validates_and_describes_the_types(head: Head) -> None:
    status, document = post(head, "/v1/openapi.json")
    assert status == 200
    validate(document)
    put = document["paths"][f"/v1/namespaces/{NS}/actors/inventory/put"]["post"]
    request = put["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert request["args"]["prefixItems"] == [{"$ref": "#/components/schemas/Item"}]
    assert document["components"]["schemas"]["Item"]["required"] == ["name", "qty"]
    result = put["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["result"]
    assert result == {"$ref": "#/components/schemas/Item"}
    add = document["paths"][f"/v1/namespaces/{NS}/actors/inventory/add"]["post"]
    args = add["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert args["args"]["prefixItems"] == [{"type": "integer"}] and args["args"]["maxItems"] == 1
    assert args["kwargs"]["properties"] == {"n": {"type": "integer"}, "times": {"default": 1, "type": "integer"}}
    assert not any("/plain/" in path for path in document["paths"])


def _stub(head: Head) -> tuple[grpc.Channel, gateway_pb2_grpc.GatewayStub]:
    channel = grpc.insecure_channel(head.grpc)
    return channel, gateway_pb2_grpc.GatewayStub(channel)


def test_grpc_invoke_with_json_or_protobuf_values(head: Head) -> None:
    channel, stub = _stub(head)
    auth = (("authorization", f"Bearer {head.token}"),)
    with channel:
        reply = stub.Invoke(gateway_pb2.InvokeRequest(namespace=NS, actor="inventory", method="put",
                                                      args_json='{"args": [{"name": "gear", "qty": 5}]}'),
                            metadata=auth, timeout=60)
        assert json.loads(reply.result_json) == {"name": "GEAR", "qty": 10}
        args = struct_pb2.ListValue()
        json_format.ParseDict([7], args)
        kwargs = struct_pb2.Struct()
        json_format.ParseDict({"times": 2}, kwargs)
        reply = stub.Invoke(gateway_pb2.InvokeRequest(
            namespace=NS, actor="inventory", method="add", values=gateway_pb2.Arguments(args=args, kwargs=kwargs)),
            metadata=auth, timeout=60)
        assert reply.WhichOneof("result") == "result_value" and reply.result_value.number_value == 14
        for request, metadata, code, type_name in [
            (dict(actor="inventory", method="add", args_json='{"args": ["x"]}'), auth,
             grpc.StatusCode.INVALID_ARGUMENT, "ArgumentValidationError"),
            (dict(actor="nobody", method="add"), auth, grpc.StatusCode.NOT_FOUND, "ActorNotFoundError"),
            (dict(actor="inventory", method="take", args_json='{"args": ["kite"]}'), auth,
             grpc.StatusCode.INTERNAL, "OutOfStock"),
            (dict(actor="inventory", method="add", args_json='{"args": [1]}'), (), grpc.StatusCode.UNAUTHENTICATED,
             "Unauthenticated"),
            (dict(actor="inventory", method="add", args_json='{"args": [1]}'), (("authorization", "Bearer nope"),),
             grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated"),
        ]:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Invoke(gateway_pb2.InvokeRequest(namespace=NS, **request), metadata=metadata, timeout=60)
            error: Any = caught.value
            assert error.code() == code, (request, error.details())
            assert dict(error.trailing_metadata())["actorhub-error-type"] == type_name
            assert error.details()


def _npm_modules() -> Path:
    """node_modules with the Node client's packages, installed once per version set."""
    cache = Path.home() / ".cache" / "actorhub-tests" / "npm" / "+".join(p.replace("/", "_") for p in NPM_PACKAGES)
    modules = cache / "node_modules"
    if (modules / "@grpc" / "grpc-js").is_dir() and (modules / "@grpc" / "proto-loader").is_dir():
        return modules
    staging = cache.parent / f".{cache.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(staging),
                                *NPM_PACKAGES], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    try:
        staging.rename(cache)  # a concurrent run may have put it there first: theirs is as good
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return modules


@pytest.mark.network  # the Node client's packages come from the npm registry the first time
def test_the_example_service_called_with_curl_and_from_node(head: Head) -> None:
    deployed = subprocess.run([sys.executable, str(REPO / "examples" / "typed_service" / "service.py"), head.address],
                              capture_output=True, text=True, timeout=90)
    assert deployed.returncode == 0, deployed.stderr

    def curl(method: str, body: str) -> tuple[int, Any]:
        out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {head.token}",
                              "-d", body, f"http://{head.http}/v1/namespaces/shop/actors/inventory/{method}"],
                             capture_output=True, text=True, timeout=60, check=True)
        text, _, status = out.stdout.rpartition("\n")
        return int(status), json.loads(text)

    assert curl("put", '{"args": [{"name": "bolt", "qty": 3}]}') == (200, {"result": {"name": "bolt", "qty": 3}})
    status, body = curl("take", '{"args": ["bolt"], "kwargs": {"qty": 5}}')
    assert status == 500 and body["error"] == {"type": "OutOfStockError", "message": "5 bolt wanted, 3 in stock"}
    status, body = curl("put", '{"args": [{"name": "nut", "qty": 0}]}')  # the model's own constraint (ge=1)
    assert status == 400 and "greater than or equal to 1" in body["error"]["message"]
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the Node.js client needs node and npm")
    env = {**os.environ, "NODE_PATH": str(_npm_modules()), "ACTORHUB_TOKEN": head.token}
    client = REPO / "examples" / "typed_service" / "client.js"

    def node(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["node", str(client), head.grpc, "shop", "inventory", *args], capture_output=True,
                              text=True, timeout=60, env=env)

    done = node("take", '{"args": ["bolt"], "kwargs": {"qty": 2}}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"result": {"name": "bolt", "qty": 2}}
    refused = node("take", '{"args": [7]}')
    assert refused.returncode == 1, refused.stderr
    error = json.loads(refused.stdout)
    assert (error["code"], error["type"]) == ("INVALID_ARGUMENT", "ArgumentValidationError")
    assert "valid string" in error["message"]


def test_a_killed_actor_is_503_while_it_restarts_and_404_when_it_is_gone(head: Head) -> None:
    status, body = call(head, "phoenix", "pid")
    assert status == 200
    first = body["result"]
    # A call in flight when the process dies fails (at most once, as in Ray); the name still
    # resolves, to the restarting actor: 503, and the next call reaches the new process.
    outcome = _in_flight_while_killed(head, first)
    assert outcome[0] == 503 and outcome[1]["error"]["type"] == "ActorDiedError", outcome
    status, body = call(head, "phoenix", "pid")
    assert status == 200 and body["result"] != first
    # Out of restarts: gone for good, and its name with it.
    outcome = _in_flight_while_killed(head, body["result"])
    assert outcome[0] == 404 and outcome[1]["error"]["type"] == "ActorDiedError", outcome
    status, body = call(head, "phoenix", "pid")
    assert (status, body["error"]["type"]) == (404, "ActorNotFoundError")


def _in_flight_while_killed(head: Head, pid: int) -> tuple[int, Any]:
    outcome: list[tuple[int, Any]] = []
    caller = threading.Thread(target=lambda: outcome.append(call(head, "phoenix", "nap", 30.0)))
    caller.start()
    time.sleep(1.0)  # the call is running in the actor by now (it naps 30 s)
    os.kill(pid, signal.SIGKILL)
    caller.join(60)
    assert outcome, "the call in flight did not end"
    return outcome[0]


def test_serve_gateway_runs_in_the_foreground_until_sigterm(head: Head) -> None:
    gateway = subprocess.Popen([*CLI, "serve-gateway", "--address", head.address, "--port", "0", "--grpc-port", "-1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert gateway.stdout is not None
        line = ""
        while "gateway serves" not in line:
            line = gateway.stdout.readline()
            assert line or gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
        http = re.search(r"http://(\S+?)(,|\s|$)", line).group(1)  # type: ignore[union-attr]
        assert "gRPC" not in line
        assert post(head, f"/v1/namespaces/{NS}/actors/inventory/add", {"args": [5]}, http=http) == (
            200, {"result": 5})
    finally:
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(30)
    assert code == 0


def test_generated_gateway_code_matches_the_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate_gateway(tmp_path)
    fresh, checked_in = tmp_path / "gateway", REPO / "actorhub" / "_proto" / "gateway"
    for folder in (Path("."), Path("v1")):
        names = sorted(p.name for p in (fresh / folder).iterdir() if p.is_file())
        assert names == sorted(p.name for p in (checked_in / folder).iterdir() if p.is_file()), (
            "actorhub/_proto/gateway is stale: run `make protos`")
        stale = [n for n in names if not filecmp.cmp(fresh / folder / n, checked_in / folder / n, shallow=False)]
        assert not stale, f"actorhub/_proto/gateway is stale against protos/ ({stale}): run `make protos`"
