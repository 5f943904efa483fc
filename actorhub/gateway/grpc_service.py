"""The gateway's gRPC service (`protos/actorhub/gateway/v1/gateway.proto`), on the gateway's event loop.

`Invoke` takes its arguments as JSON text (`args_json`, the HTTP body's shape) or as protobuf
values (`values`: a ListValue and a Struct) and answers the same way. A failure ends the call
with the status of its kind (invoke.py), the message as the details and the error's type in the
trailing metadata `actorhub-error-type`. The token is checked on every call, as HTTP's.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from actorhub._proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from actorhub.dashboard.http_auth import bearer_refusal
from actorhub.gateway.http_api import parse_body
from actorhub.gateway.invoke import ErrorKind, GatewayError, Invoker

ERROR_TYPE_KEY = "actorhub-error-type"
_CODES = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, invoker: Invoker, token: str) -> None:
        self._invoker = invoker
        self._token = token.encode()

    async def Invoke(
        self, request: gateway_pb2.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.InvokeReply:
        try:
            self._check_token(context)
            as_json = request.WhichOneof("arguments") != "values"
            args, kwargs = _arguments(request)
            result = await self._invoker.invoke(request.namespace, request.actor, request.method, args, kwargs)
            if as_json:
                return gateway_pb2.InvokeReply(result_json=json.dumps(result))
            value = struct_pb2.Value()
            json_format.ParseDict(result, value)
            return gateway_pb2.InvokeReply(result_value=value)
        except GatewayError as e:
            context.set_trailing_metadata(((ERROR_TYPE_KEY, e.type_name),))
            await context.abort(_CODES[e.kind], e.message)
            raise  # abort raises; this is not reached

    def _check_token(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        header = next((str(v) for k, v in context.invocation_metadata() or () if k == "authorization"), "")
        refusal = bearer_refusal(header, self._token)
        if refusal is not None:
            raise GatewayError(ErrorKind.UNAUTHENTICATED, "Unauthenticated", refusal.replace(
                "'Authorization: Bearer <token>'", "the metadata 'authorization: Bearer <token>'"))


def _arguments(request: gateway_pb2.InvokeRequest) -> tuple[list[Any], dict[str, Any]]:
    if request.WhichOneof("arguments") == "values":
        values = request.values
        args = _integral(json_format.MessageToDict(values.args)) or []
        kwargs = _integral(json_format.MessageToDict(values.kwargs)) or {}
        return args, kwargs
    return parse_body(request.args_json.encode())


def _integral(value: Any) -> Any:
    """A protobuf Value's numbers are doubles: whole ones become ints, or no int parameter could
    take one (the typed check is strict); a float parameter takes an int as well."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


async def start(invoker: Invoker, token: str, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """A started gRPC server for the gateway on the running loop, and the port it listens on."""
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayService(invoker, token), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"the gateway cannot listen for gRPC on {host}:{port}")
    await server.start()
    return server, bound
