"""`actorhub job submit|status|logs|stop|list|delete`: Ray's `ray job` commands, through
`JobSubmissionClient` (over HTTP to the head's dashboard).

`submit` follows the job's output until it ends (unless --no-wait) and exits 0 when it
succeeded, 1 otherwise, as Ray's does; `stop` waits for the job to end unless --no-wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from typing import Any

from actorhub.cli.common import CliError

_ADDRESS_HELP = ("the dashboard, http://HOST:PORT (default: $ACTORHUB_API_SERVER_ADDRESS, $ACTORHUB_ADDRESS, "
                 "else the newest cluster on this machine)")
_STOP_POLL_S = 0.2


def add_parser(commands: Any) -> None:
    job = commands.add_parser("job", help="submit and follow jobs (Ray's Job API, over HTTP to the head)")
    verbs = job.add_subparsers(dest="verb", required=True, metavar="VERB")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", default=None, help=_ADDRESS_HELP)
        parser.add_argument("--headers", default=None, metavar="JSON",
                            help="HTTP headers for every request, as a JSON object (they may carry Authorization)")

    submit = verbs.add_parser("submit", help="run a shell command as a job on the head")
    common(submit)
    submit.add_argument("--submission-id", default=None, help="the job's id (default: a new one)")
    submit.add_argument("--runtime-env-json", default=None, metavar="JSON", help="the job's runtime_env, as JSON")
    submit.add_argument("--working-dir", default=None, metavar="DIR",
                        help="a local directory, uploaded and used as the job's working directory")
    submit.add_argument("--metadata-json", default=None, metavar="JSON", help="metadata to keep with the job")
    submit.add_argument("--no-wait", action="store_true", help="return once submitted; do not follow the logs")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, help="the command, after --")

    for verb, text in (("status", "a job's status"), ("stop", "stop a job"), ("delete", "forget an ended job")):
        parser = verbs.add_parser(verb, help=text)
        common(parser)
        parser.add_argument("job_id", metavar="ID")
        if verb == "stop":
            parser.add_argument("--no-wait", action="store_true", help="return once asked; do not wait for the end")
    logs = verbs.add_parser("logs", help="a job's output")
    common(logs)
    logs.add_argument("job_id", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true", help="follow the output until the job ends")
    listing = verbs.add_parser("list", help="every job of the cluster")
    common(listing)


def _json_arg(text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{flag}: not JSON: {e}") from None


def _client(args: argparse.Namespace) -> Any:
    from actorhub.job_submission.client import JobSubmissionClient

    headers = _json_arg(args.headers, "--headers")
    if headers is not None and not isinstance(headers, dict):
        raise CliError("--headers must be a JSON object")
    return JobSubmissionClient(args.address, headers=headers)


def job_command(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        if args.verb == "submit":
            return _submit(client, args)
        if args.verb == "status":
            info = client.get_job_info(args.job_id)
            print(f"Status for job '{args.job_id}': {info.status.value}")
            if info.message:
                print(f"Status message: {info.message}")
            return 0
        if args.verb == "logs":
            if args.follow:
                _follow(client, args.job_id)
            else:
                sys.stdout.write(client.get_job_logs(args.job_id))
            return 0
        if args.verb == "stop":
            return _stop(client, args.job_id, args.no_wait)
        if args.verb == "delete":
            client.delete_job(args.job_id)
            print(f"Job '{args.job_id}' deleted successfully")
            return 0
        return _list(client)
    finally:
        client.close()


def _submit(client: Any, args: argparse.Namespace) -> int:
    words = [w for w in args.entrypoint if w != "--"] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not words:
        raise CliError("no entrypoint: give the command after --, e.g. actorhub job submit -- python script.py")
    # One word is a whole shell command (`-- "a && b"`); several are quoted so the shell gets them back.
    entrypoint = words[0] if len(words) == 1 else shlex.join(words)
    runtime_env = _json_arg(args.runtime_env_json, "--runtime-env-json") or {}
    if not isinstance(runtime_env, dict):
        raise CliError("--runtime-env-json must be a JSON object")
    if args.working_dir is not None:
        runtime_env["working_dir"] = args.working_dir
    metadata = _json_arg(args.metadata_json, "--metadata-json")
    job_id = client.submit_job(entrypoint=entrypoint, submission_id=args.submission_id,
                               runtime_env=runtime_env or None, metadata=metadata)
    rule = "-" * (len(job_id) + 32)
    print(f"{rule}\nJob '{job_id}' submitted successfully\n{rule}\n")
    print(f"Next steps\n  Query the logs of the job:\n    actorhub job logs {job_id}\n"
          f"  Query the status of the job:\n    actorhub job status {job_id}\n"
          f"  Request the job to be stopped:\n    actorhub job stop {job_id}\n", flush=True)
    if args.no_wait:
        return 0
    print("Tailing logs until the job exits (disable with --no-wait):", flush=True)
    _follow(client, job_id)
    info = client.get_job_info(job_id)
    while not info.status.is_terminal():  # the stream ends with the job; its record may lag a moment
        time.sleep(_STOP_POLL_S)
        info = client.get_job_info(job_id)
    outcome = {"SUCCEEDED": "succeeded", "STOPPED": "was stopped", "FAILED": "failed"}[info.status.value]
    print(f"{rule}\nJob '{job_id}' {outcome}\n{rule}")
    if info.status.value == "FAILED" and info.message:
        print(info.message.splitlines()[0], file=sys.stderr)
    return 0 if info.status.value == "SUCCEEDED" else 1


def _follow(client: Any, job_id: str) -> None:
    async def follow() -> None:
        async for text in client.tail_job_logs(job_id):
            sys.stdout.write(text)
            sys.stdout.flush()

    asyncio.run(follow())


def _stop(client: Any, job_id: str, no_wait: bool) -> int:
    if not client.stop_job(job_id):
        print(f"Job '{job_id}' had already ended ({client.get_job_status(job_id).value})")
        return 0
    print(f"Attempting to stop job '{job_id}'", flush=True)
    if no_wait:
        return 0
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(_STOP_POLL_S)
    print(f"Job '{job_id}' has exited with status {status.value}")
    return 0


def _list(client: Any) -> int:
    jobs = client.list_jobs()
    if not jobs:
        print("No jobs.")
        return 0
    print(f"{'SUBMISSION ID':<32} {'STATUS':<10} {'START':<20} ENTRYPOINT")
    for info in jobs:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.start_time / 1000)) if info.start_time else "-"
        print(f"{info.submission_id:<32} {info.status.value:<10} {start:<20} {info.entrypoint}")
    return 0
