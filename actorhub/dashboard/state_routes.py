"""The cluster's state as JSON for the dashboard's page, at Ray's state API paths (`/api/v0/...`).

Each route reads fresh through `cluster_state.ClusterStateReader` on a thread (the reads are
blocking gRPC and HTTP calls). Lists answer `{"result": [...], "total": N}`; errors are
`{"error": message}`: 404 for an unknown node or actor, 503 when the hub does not answer. The
token is required, as on every route but the page's own files.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from actorhub.dashboard.cluster_state import ClusterStateReader, as_json, tasks_by_state
from actorhub.dashboard.context import context_of
from actorhub.dashboard.http_auth import json_error
from actorhub.exceptions import RpcFailedError

T = TypeVar("T")
routes = web.RouteTableDef()


async def _read(request: web.Request, read: Callable[[ClusterStateReader], T]) -> T:
    """`read` run on a thread; a cluster that does not answer ends the request with 503."""
    context = context_of(request)
    try:
        return await context.in_thread(read, context.state)
    except RpcFailedError as e:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": f"the cluster did not answer: {e}"}), content_type="application/json"
        ) from None


def _listing(rows: list[object], **extra: object) -> web.Response:
    return web.json_response({"result": as_json(rows), "total": len(rows), **extra})


@routes.get("/api/v0/cluster")
async def cluster_summary(request: web.Request) -> web.Response:
    """Counts for the page's header: nodes, actors by state (actorhub's own left out), tasks by
    state, jobs by status, placement groups."""

    def read(state: ClusterStateReader) -> dict[str, object]:
        status = state.status()
        actors = collections.Counter(a.state for a in state.actors() if not a.system)
        return {
            "nodes": {"alive": sum(n.alive for n in status.nodes), "dead": sum(not n.alive for n in status.nodes)},
            "actors": dict(actors),
            "tasks": tasks_by_state(state.tasks(status)),
            "placement_groups": len(status.placement_groups),
            "hub": {"started_at": status.hub_started_at, "restarts": status.hub_restarts},
        }

    summary = await _read(request, read)
    jobs = collections.Counter(str(j.status) for j in context_of(request).jobs.list_jobs())
    return web.json_response({**summary, "jobs": dict(jobs)})


@routes.get("/api/v0/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    return _listing(list(await _read(request, lambda s: s.nodes())))


@routes.get("/api/v0/nodes/{node_id}")
async def get_node(request: web.Request) -> web.Response:
    """A node, with the actors placed on it and the tasks it ran."""
    node_id = request.match_info["node_id"]

    def read(state: ClusterStateReader) -> dict[str, object] | None:
        status = state.status()
        node = state.node(node_id, status)
        if node is None:
            return None
        return {
            "node": as_json(node),
            "actors": as_json([a for a in state.actors() if a.node_id == node_id]),
            "tasks": as_json([t for t in state.tasks(status) if t.node_id == node_id]),
        }

    found = await _read(request, read)
    return web.json_response(found) if found is not None else json_error(404, f"no node {node_id} in this cluster")


@routes.get("/api/v0/actors")
async def list_actors(request: web.Request) -> web.Response:
    """Every actor, dead ones included; `?namespace=NS` or `?state=ALIVE` keep only those."""
    rows = await _read(request, lambda s: s.actors())
    for field in ("namespace", "state"):
        wanted = request.query.get(field)
        if wanted is not None:
            rows = [r for r in rows if getattr(r, field) == wanted]
    return _listing(list(rows))


@routes.get("/api/v0/actors/{actor_id}")
async def get_actor(request: web.Request) -> web.Response:
    actor_id = request.match_info["actor_id"]
    try:
        actor = await _read(request, lambda s: s.actor(actor_id))
    except ValueError as e:
        return json_error(404, str(e))
    return web.json_response({"actor": as_json(actor)})


@routes.get("/api/v0/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    """Tasks by name and node, each with its counts by state."""
    return _listing(list(await _read(request, lambda s: s.tasks())))


@routes.get("/api/v0/tasks/summarize")
async def summarize_tasks(request: web.Request) -> web.Response:
    rows = await _read(request, lambda s: s.tasks())
    return web.json_response({"by_state": tasks_by_state(rows)})


@routes.get("/api/v0/objects")
async def list_objects(request: web.Request) -> web.Response:
    listing = await _read(request, lambda s: s.objects())
    return _listing(list(listing.objects), unreachable=listing.unreachable)


@routes.get("/api/v0/placement_groups")
async def list_placement_groups(request: web.Request) -> web.Response:
    return _listing(list(await _read(request, lambda s: s.placement_groups())))
