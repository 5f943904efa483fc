"""The gateway's HTTP/JSON API (aiohttp). Every route needs the cluster token (dashboard/http_auth.py).

    POST /v1/namespaces/{ns}/actors/{name}/{method}   body {"args": [...], "kwargs": {...}} (both optional)
                                                      -> 200 {"result": ...}
    GET  /v1/namespaces/{ns}/actors                   the exposed actors of a namespace and their methods
    GET  /v1/openapi.json                             the OpenAPI document of every exposed actor

Errors are {"error": {"type": ..., "message": ...}} with the status of their kind (invoke.py).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

import actorhub
from actorhub.dashboard.http_auth import token_middleware
from actorhub.exceptions import PeerUnavailableError
from actorhub.gateway import openapi
from actorhub.gateway.interface import ExposedMethod
from actorhub.gateway.invoke import ErrorKind, GatewayError, Invoker
from actorhub.wire.records import ActorInfo

INVOKER: web.AppKey[Invoker] = web.AppKey("actorhub_gateway_invoker", Invoker)
MAX_BODY_BYTES = 64 * 2**20
_BODY_KEYS = frozenset({"args", "kwargs"})


def build_app(invoker: Invoker, token: str) -> web.Application:
    app = web.Application(middlewares=[token_middleware(token, _unauthenticated)], client_max_size=MAX_BODY_BYTES)
    app[INVOKER] = invoker
    app.router.add_post("/v1/namespaces/{namespace}/actors/{actor}/{method}", _invoke)
    app.router.add_get("/v1/namespaces/{namespace}/actors", _list_actors)
    app.router.add_get("/v1/openapi.json", _openapi)
    return app


def _unauthenticated(message: str) -> dict[str, Any]:
    return GatewayError(ErrorKind.UNAUTHENTICATED, "Unauthenticated", message).as_json()


def error_response(error: GatewayError) -> web.Response:
    return web.json_response(error.as_json(), status=error.kind.value)


def parse_body(raw: bytes) -> tuple[list[Any], dict[str, Any]]:
    """(args, kwargs) of a request body; GatewayError(INVALID_ARGUMENT) for one of another shape."""
    if not raw.strip():
        return [], {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad_request(f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise _bad_request(f'the request body must be a JSON object {{"args": [...], "kwargs": {{...}}}}, '
                           f"not {type(body).__name__}")
    unknown = sorted(set(body) - _BODY_KEYS)
    if unknown:
        raise _bad_request(f"unknown field(s) {', '.join(unknown)} in the request body (accepted: args, kwargs)")
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(args, list):
        raise _bad_request(f"args must be a JSON array of the positional arguments, not {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise _bad_request(f"kwargs must be a JSON object of the named arguments, not {type(kwargs).__name__}")
    return args, kwargs


def _bad_request(message: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_ARGUMENT, "InvalidRequest", message)


async def _invoke(request: web.Request) -> web.Response:
    match = request.match_info
    try:
        args, kwargs = parse_body(await request.read())
        result = await request.app[INVOKER].invoke(match["namespace"], match["actor"], match["method"], args, kwargs)
    except GatewayError as e:
        return error_response(e)
    return web.json_response({"result": result})


async def _listing(request: web.Request, namespace: str | None) -> list[tuple[ActorInfo, dict[str, ExposedMethod]]]:
    try:
        return await request.app[INVOKER].directory.listing(namespace)
    except PeerUnavailableError as e:  # the hub is away (restarting)
        raise web.HTTPServiceUnavailable(
            text=json.dumps(GatewayError(ErrorKind.UNAVAILABLE, type(e).__name__, str(e)).as_json()),
            content_type="application/json") from None


async def _list_actors(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    listing = await _listing(request, namespace)
    base = f"/v1/namespaces/{quote(namespace, safe='')}/actors"
    actors = [
        {"name": info.name, "class_name": info.class_name, "state": info.state,
         "methods": [{"name": name, "path": f"{base}/{quote(info.name, safe='')}/{name}"} for name in sorted(methods)]}
        for info, methods in listing
    ]
    return web.json_response({"namespace": namespace, "actors": actors})


async def _openapi(request: web.Request) -> web.Response:
    listing = await _listing(request, None)
    return web.json_response(openapi.document(listing, actorhub.__version__))
