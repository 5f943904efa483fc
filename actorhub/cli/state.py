"""`actorhub list tasks|objects|nodes|jobs|placement-groups` (and `list actors` with
--filter or --format json): Ray's `ray list`, reading what `actorhub.util.state` and the
dashboard read.

Each kind prints a table of its main columns, or every column as JSON with `--format json`.
`--filter KEY=VALUE` (or KEY!=VALUE, repeatable) keeps the rows that pass every filter.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from actorhub.cli.common import find_cluster, format_table

KINDS = ("actors", "tasks", "objects", "nodes", "jobs", "placement-groups")
# The columns of each kind's table; --format json prints them all.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "actors": ("actor_id", "class_name", "name", "ray_namespace", "state", "pid", "node_id", "num_restarts"),
    "tasks": ("name", "state", "node_id", "count"),
    "objects": ("object_id", "object_size", "task_status", "reference_type", "owner", "node_ids"),
    "nodes": ("node_id", "node_ip", "is_head_node", "state", "state_message", "resources_total"),
    "jobs": ("submission_id", "job_id", "status", "entrypoint", "start_time", "end_time"),
    "placement-groups": ("placement_group_id", "name", "state", "strategy", "is_detached", "bundles"),
}
HELP = {
    "tasks": "tasks by function, node and state, with their counts",
    "objects": "every owner's objects with sizes and the nodes that keep them",
    "nodes": "every node the hub has known, with resources and drain state",
    "jobs": "submitted jobs (needs the head's dashboard)",
    "placement-groups": "placement groups not removed, with their bundles",
}


def add_state_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep rows whose column KEY is (=) or is not (!=) VALUE; repeatable")
    parser.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the reads (default 30)")


def add_kinds(kinds: Any, address_help: str) -> None:
    for kind, text in HELP.items():
        parser = kinds.add_parser(kind, help=text)
        add_state_flags(parser)
        parser.add_argument("--address", metavar="HOST:PORT", help=address_help)


def wants_state_listing(args: argparse.Namespace) -> bool:
    """`list actors` keeps its own live-actors table unless a state flag asks for more."""
    return args.kind != "actors" or bool(args.filter) or args.format == "json"


def list_command(args: argparse.Namespace) -> int:
    from actorhub.util.state.filters import parse_cli_filter

    filters = [parse_cli_filter(text) for text in args.filter]
    rows = _rows(args, filters)
    columns = TABLE_COLUMNS[args.kind]
    if args.format == "json":
        print(json.dumps([_as_dict(row) for row in rows], indent=2, default=str))
        return 0
    if not rows:
        print(f"No {args.kind.replace('-', ' ')} match." if filters else f"No {args.kind.replace('-', ' ')}.")
        return 0
    print(format_table([c.upper() for c in columns], [[_cell(_as_dict(row).get(c)) for c in columns] for row in rows]))
    return 0


def _rows(args: argparse.Namespace, filters: list[tuple[str, str, Any]]) -> list[Any]:
    from actorhub.util.state import api

    if args.kind == "jobs":
        return api.list_jobs(args.address, filters=filters, limit=args.limit, timeout=args.timeout)
    from actorhub.config import Config
    from actorhub.dashboard.cluster_state import READ_DEADLINES, ClusterStateReader
    from actorhub.wire.transport import ChannelPool

    target = find_cluster(Config.load(), args.address)
    channels = ChannelPool(target.token, tls=target.tls)
    deadlines = READ_DEADLINES.model_copy(update={"control_s": float(args.timeout)})
    try:
        reader = ClusterStateReader(channels, target.address, deadlines)
        return api.list_kind(args.kind, reader, filters, args.limit, raise_on_missing_output=False)
    finally:
        channels.close()


def _as_dict(row: Any) -> dict[str, Any]:
    if hasattr(row, "model_dump"):
        return dict(row.model_dump(mode="json"))
    return dict(row.asdict())


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)
