"""The cluster's Prometheus scrape targets over HTTP, as Ray's dashboard serves them.

`GET /api/prometheus/sd` answers with the hub's service-discovery file (`hub/metrics_export.py`):
a Prometheus `http_sd_configs` entry pointed here (with the cluster token as its bearer
credentials) follows nodes as they come and go, like a `file_sd_configs` entry on the head's
session file.
"""

from __future__ import annotations

import json

from aiohttp import web

from actorhub.dashboard.context import context_of
from actorhub.dashboard.http_auth import json_error
from actorhub.metrics.node_dir import SERVICE_DISCOVERY_FILE

routes = web.RouteTableDef()


@routes.get("/api/prometheus/sd")
async def service_discovery(request: web.Request) -> web.Response:
    path = context_of(request).session_dir / SERVICE_DISCOVERY_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return web.json_response([])  # the hub has not written it yet: no targets
    try:
        return web.json_response(json.loads(text))
    except json.JSONDecodeError as e:  # written atomically, so never half: say so rather than guess
        return json_error(500, f"{path} is not JSON: {e}")
