"""`JobSubmissionClient`: Ray's Job SDK, over HTTP (httpx) to the dashboard's Job API.

A job's local working_dir and py_modules are packed here (`runtime_env/packaging.py`, the same
content-addressed zips `init()` makes) and uploaded to the cluster through the dashboard
(`PUT /api/packages/NAME`) unless it has them; the job is submitted with their URIs, as Ray's
client does with its `gcs://` packages. Errors the server answers are JobSubmissionError (a
RuntimeError, as in Ray) carrying its message; a bad runtime_env is refused here, as OptionsError.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from actorhub.config import Config
from actorhub.exceptions import JobSubmissionError, OptionsError
from actorhub.job_submission.address import find_dashboard
from actorhub.job_submission.models import JobDetails, JobStatus
from actorhub.runtime_env import packaging
from actorhub.runtime_env.spec import PACKAGE_SCHEME, RuntimeEnvSpec, parse

_TIMEOUT_S = 30.0
_UPLOAD_TIMEOUT_S = 600.0


class JobSubmissionClient:
    """Submit jobs to a cluster's head and follow them; `address` as in Ray (`address.py`):
    the dashboard's http://HOST:PORT, "auto", a hub's HOST:PORT, or None (the environment,
    then this machine's newest cluster). `headers` are sent with every request; without an
    Authorization header the cluster token is sent as a bearer token."""

    def __init__(self, address: str | None = None, create_cluster_if_needed: bool = False,
                 cookies: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                 headers: dict[str, Any] | None = None, verify: str | bool | None = True) -> None:
        if create_cluster_if_needed:
            raise OptionsError("JobSubmissionClient(create_cluster_if_needed=True): start a head with "
                               "`actorhub start --head`; the client does not start clusters")
        dashboard = find_dashboard(address, os.environ, Config.load())
        self.address = dashboard.url
        self._default_metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        sent = {str(k): str(v) for k, v in (headers or {}).items()}
        if not any(k.lower() == "authorization" for k in sent) and dashboard.token is not None:
            sent["Authorization"] = f"Bearer {dashboard.token}"
        self._headers = sent
        self._cookies = cookies
        self._verify = True if verify is None else verify
        self._http = httpx.Client(base_url=self.address, headers=sent, cookies=cookies, verify=self._verify,
                                  timeout=_TIMEOUT_S)
        self._version = self._request("GET", "/api/version", "check the Job API's version")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JobSubmissionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_version(self) -> str:
        return str(self._version["version"])

    # -- the requests -------------------------------------------------------------------------
    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise JobSubmissionError(f"{what}: no answer from the dashboard at {self.address}: {e}") from None
        if response.status_code >= 400:
            raise JobSubmissionError(f"{what}: the dashboard at {self.address} answered {response.status_code}: "
                                     f"{_error_text(response)}", response.status_code)
        return response.json()

    def submit_job(self, *, entrypoint: str, job_id: str | None = None, runtime_env: dict[str, Any] | None = None,
                   metadata: dict[str, str] | None = None, submission_id: str | None = None,
                   entrypoint_num_cpus: float | None = None, entrypoint_num_gpus: float | None = None,
                   entrypoint_memory: int | None = None,
                   entrypoint_resources: dict[str, float] | None = None) -> str:
        """Submit `entrypoint` (a shell command) to run on the head; returns its submission id."""
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise OptionsError(f"submit_job(): entrypoint must be a non-empty shell command, not {entrypoint!r}")
        body: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": submission_id or job_id,
            "runtime_env": self._upload_packages(runtime_env),
            "metadata": {**self._default_metadata, **(metadata or {})},
        }
        for name, value in (("entrypoint_num_cpus", entrypoint_num_cpus), ("entrypoint_num_gpus", entrypoint_num_gpus),
                            ("entrypoint_memory", entrypoint_memory), ("entrypoint_resources", entrypoint_resources)):
            if value is not None:
                body[name] = value
        reply = self._request("POST", "/api/jobs/", f"submit_job(entrypoint={entrypoint!r})", json=body)
        return str(reply["submission_id"])

    def _upload_packages(self, runtime_env: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The runtime_env as the server takes it: checked, its local paths uploaded as packages."""
        try:
            spec = parse(dict(runtime_env) if isinstance(runtime_env, Mapping) else runtime_env)
        except ValueError as e:
            raise OptionsError(f"submit_job(): runtime_env: {e}") from None
        if spec is None:
            return None
        working_dir = spec.working_dir
        if working_dir is not None and not working_dir.startswith(PACKAGE_SCHEME):
            working_dir = self._upload("working_dir", working_dir, spec.excludes)
        modules = tuple(path if path.startswith(PACKAGE_SCHEME) else self._upload("py_modules", path, spec.excludes)
                        for path in spec.py_modules)
        resolved = RuntimeEnvSpec(env_vars=spec.env_vars, working_dir=working_dir, py_modules=modules, pip=spec.pip)
        return resolved.as_dict()

    def _upload(self, what: str, path: str, excludes: tuple[str, ...]) -> str:
        try:
            package = packaging.package_for(what, path, excludes)
        except (OSError, packaging.PackageTooLargeError) as e:
            raise OptionsError(f"submit_job(): runtime_env {what} {path!r} cannot be packed: {e}") from None
        name = package.uri.removeprefix(PACKAGE_SCHEME)
        try:
            found = self._http.get(f"/api/packages/{name}")
        except httpx.HTTPError as e:
            raise JobSubmissionError(f"upload of {what} {path!r}: no answer from {self.address}: {e}") from None
        if found.status_code != 200:
            self._request("PUT", f"/api/packages/{name}", f"upload of {what} {path!r}", content=package.data,
                          timeout=_UPLOAD_TIMEOUT_S)
        return package.uri

    def get_job_info(self, job_id: str) -> JobDetails:
        return JobDetails.model_validate(self._request("GET", f"/api/jobs/{job_id}", f"get_job_info({job_id!r})"))

    def list_jobs(self) -> list[JobDetails]:
        return [JobDetails.model_validate(item) for item in self._request("GET", "/api/jobs/", "list_jobs()")]

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.get_job_info(job_id).status

    def get_job_logs(self, job_id: str) -> str:
        return str(self._request("GET", f"/api/jobs/{job_id}/logs", f"get_job_logs({job_id!r})")["logs"])

    def stop_job(self, job_id: str) -> bool:
        """Ask the job to stop (SIGTERM, then SIGKILL); False when it had ended already."""
        return bool(self._request("POST", f"/api/jobs/{job_id}/stop", f"stop_job({job_id!r})")["stopped"])

    def delete_job(self, job_id: str) -> bool:
        """Forget an ended job and its logs; a job that has not ended is refused."""
        return bool(self._request("DELETE", f"/api/jobs/{job_id}", f"delete_job({job_id!r})")["deleted"])

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """The job's output as it is written, from its start, until the job has ended."""
        what = f"tail_job_logs({job_id!r})"
        async with httpx.AsyncClient(base_url=self.address, headers=self._headers, cookies=self._cookies,
                                     verify=self._verify, timeout=httpx.Timeout(_TIMEOUT_S, read=None)) as http:
            try:
                async with http.stream("GET", f"/api/jobs/{job_id}/logs/tail") as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise JobSubmissionError(f"{what}: the dashboard at {self.address} answered "
                                                 f"{response.status_code}: {_error_text(response)}",
                                                 response.status_code)
                    async for text in response.aiter_text():
                        if text:
                            yield text
            except httpx.HTTPError as e:
                raise JobSubmissionError(f"{what}: the stream from {self.address} broke: {e}") from None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text.strip()
