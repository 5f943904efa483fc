"""Ray's Job REST API on the dashboard (`/api/jobs/...`, `/api/version`) and the package upload
the client uses for a job's local working_dir and py_modules (`/api/packages/...`).

Every error is a JSON object `{"error": message}`: 400 for a request that cannot be served as
given, 404 for an unknown job or package, 502 when the hub did not take a package.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from actorhub import __version__
from actorhub.dashboard.context import context_of
from actorhub.dashboard.http_auth import json_error
from actorhub.dashboard.job_manager import JobNotFoundError, JobRequestError
from actorhub.exceptions import ActorHubError
from actorhub.job_submission.models import JobDetails
from actorhub.runtime_env.packaging import digest_of, matches_content
from actorhub.runtime_env.spec import PACKAGE_SCHEME

API_VERSION = "2"
_TAIL_POLL_S = 0.1
_TAIL_CHUNK = 64 * 1024
_RESOURCE_FIELDS = ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory", "entrypoint_resources")
_SUBMIT_FIELDS = {"entrypoint", "submission_id", "job_id", "runtime_env", "metadata", *_RESOURCE_FIELDS}

routes = web.RouteTableDef()


def _details(details: JobDetails) -> dict[str, Any]:
    return details.model_dump(mode="json")


def _job_id(request: web.Request) -> str:
    return request.match_info["job_id"]


@routes.get("/api/version")
async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": API_VERSION, "ray_version": __version__, "ray_commit": "",
                              "actorhub_version": __version__})


@routes.post("/api/jobs/")
@routes.post("/api/jobs")
async def submit(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return json_error(400, "the request body is not JSON")
    if not isinstance(body, dict):
        return json_error(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - _SUBMIT_FIELDS)
    if unknown:
        return json_error(400, f"unknown field(s) {', '.join(unknown)} (accepted: {', '.join(sorted(_SUBMIT_FIELDS))})")
    entrypoint = body.get("entrypoint")
    if not isinstance(entrypoint, str):
        return json_error(400, "entrypoint is required: the shell command to run, as a string")
    submission_id = body.get("submission_id") or body.get("job_id")
    if submission_id is not None and not isinstance(submission_id, str):
        return json_error(400, f"submission_id must be a string, not {type(submission_id).__name__}")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        return json_error(400, "metadata must be an object of string keys to string values")
    try:
        submission_id = context_of(request).jobs.submit(
            entrypoint=entrypoint, submission_id=submission_id, runtime_env=body.get("runtime_env"),
            metadata=metadata, resources={name: body.get(name) for name in _RESOURCE_FIELDS},
        )
    except JobRequestError as e:
        return json_error(400, str(e))
    return web.json_response({"job_id": submission_id, "submission_id": submission_id})


@routes.get("/api/jobs/")
@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    return web.json_response([_details(d) for d in context_of(request).jobs.list_jobs()])


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    try:
        return web.json_response(_details(context_of(request).jobs.get(_job_id(request))))
    except JobNotFoundError as e:
        return json_error(404, str(e))


@routes.get("/api/jobs/{job_id}/logs")
async def get_logs(request: web.Request) -> web.Response:
    jobs = context_of(request).jobs
    try:
        jobs.get(_job_id(request))
    except JobNotFoundError as e:
        return json_error(404, str(e))
    try:
        text = jobs.log_path(_job_id(request)).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        text = ""
    return web.json_response({"logs": text})


@routes.get("/api/jobs/{job_id}/logs/tail")
async def tail_logs(request: web.Request) -> web.StreamResponse:
    """The log as it grows, streamed (chunked) until the job has ended and all of it was sent."""
    jobs = context_of(request).jobs
    submission_id = _job_id(request)
    try:
        jobs.get(submission_id)
    except JobNotFoundError as e:
        return json_error(404, str(e))
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    path = jobs.log_path(submission_id)
    offset = 0
    while True:
        try:
            ended = jobs.get(submission_id).status.is_terminal()
        except JobNotFoundError:
            break  # deleted meanwhile
        chunk = _read_from(path, offset)
        if chunk:
            await response.write(chunk)
            offset += len(chunk)
            continue
        if ended:
            break
        await asyncio.sleep(_TAIL_POLL_S)
    await response.write_eof()
    return response


def _read_from(path: Any, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(_TAIL_CHUNK)
    except FileNotFoundError:
        return b""


@routes.post("/api/jobs/{job_id}/stop")
async def stop_job(request: web.Request) -> web.Response:
    try:
        stopped = await context_of(request).jobs.stop(_job_id(request))
    except JobNotFoundError as e:
        return json_error(404, str(e))
    return web.json_response({"stopped": stopped})


@routes.delete("/api/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    try:
        deleted = context_of(request).jobs.delete(_job_id(request))
    except JobNotFoundError as e:
        return json_error(404, str(e))
    except JobRequestError as e:
        return json_error(400, str(e))
    return web.json_response({"deleted": deleted})


def _package_uri(request: web.Request) -> str | None:
    uri = PACKAGE_SCHEME + request.match_info["name"]
    try:
        digest_of(uri)
    except ValueError:
        return None
    return uri


@routes.get("/api/packages/{name}")
async def package_exists(request: web.Request) -> web.Response:
    context = context_of(request)
    uri = _package_uri(request)
    if uri is None:
        return json_error(400, f"{request.match_info['name']!r} is not a runtime_env package name")
    try:
        found = await context.in_thread(context.packages.exists, uri)
    except ActorHubError as e:
        return json_error(502, f"the hub did not answer: {e}")
    return web.json_response({"uri": uri}) if found else json_error(404, f"the cluster has no package {uri}")


@routes.put("/api/packages/{name}")
async def upload_package(request: web.Request) -> web.Response:
    context = context_of(request)
    uri = _package_uri(request)
    if uri is None:
        return json_error(400, f"{request.match_info['name']!r} is not a runtime_env package name")
    data = await request.read()
    if not matches_content(uri, data):
        return json_error(400, f"the body is not the package {uri} (its SHA-256 differs)")
    try:
        await context.in_thread(context.packages.upload, uri, data, f"the runtime_env package {uri}")
    except ActorHubError as e:
        return json_error(502, f"the hub did not take the package: {e}")
    return web.json_response({"uri": uri})
