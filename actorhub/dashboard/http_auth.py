"""Every request to the dashboard carries the cluster token as `Authorization: Bearer <token>`;
any other is answered 401 with a JSON error, before its handler runs or its body is read. Only
the page's own files are served without it (`page_routes.is_page_request`)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def token_middleware(
    token: str, error_body: Callable[[str], object] | None = None,
    is_public: Callable[[web.Request], bool] | None = None,
) -> Middleware:
    """`error_body`: the JSON of a 401 from its message (default: {"error": message}); the
    gateway answers in its own error shape. `is_public`: requests served without the token
    (the dashboard's page files)."""
    expected = token.encode()

    def refuse(message: str) -> web.Response:
        if error_body is None:
            return json_error(401, message, **{"WWW-Authenticate": "Bearer"})
        return web.json_response(error_body(message), status=401, headers={"WWW-Authenticate": "Bearer"})

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public is not None and is_public(request):
            return await handler(request)
        refusal = bearer_refusal(request.headers.get("Authorization", ""), expected)
        if refusal is not None:
            return refuse(refusal)
        return await handler(request)

    return check_token


def bearer_refusal(header: str, expected: bytes) -> str | None:
    """Why an Authorization header (`Bearer <token>`) does not carry the token `expected`; None when it does."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return ("this endpoint needs the cluster token: send 'Authorization: Bearer <token>' "
                "(the token file is in the cluster's session directory)")
    # Constant time: the comparison must not tell how much of a guess was right.
    if not hmac.compare_digest(given.strip().encode(), expected):
        return "the bearer token is not this cluster's token"
    return None
