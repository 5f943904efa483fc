"""`actorhub drain NODE_ID [--deadline S]`: take a node out of the cluster gracefully (Ray's
`ray drain-node`; the design is in hub/node_drain.py)."""

from __future__ import annotations

import argparse
import math

from actorhub.cli.common import HubClient, find_cluster
from actorhub.config import Config

HELP = (
    "drain a node: place nothing new there, let calls under way end, move restartable actors "
    "(queued calls follow them), fail what cannot move, then remove the node"
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("drain", help=HELP, description=HELP)
    parser.add_argument("node_id", metavar="NODE_ID", help="the node's id (`actorhub status` lists them)")
    parser.add_argument("--deadline", type=_seconds, default=0.0, metavar="S",
                        help="seconds calls under way and tasks may take before what remains is killed "
                             "(default: 30)")
    parser.add_argument("--address", metavar="HOST:PORT", help="the hub (default: the latest cluster here)")


def drain_command(node_id: str, deadline_s: float, address: str | None) -> int:
    target = find_cluster(Config.load(), address)
    with HubClient(target) as hub:
        summary = hub.drain_node(node_id, deadline_s)
    print(f"Node {node_id} drained and removed: {summary.moved} actors moved, {summary.failed} could not move, "
          f"{summary.killed} ended at the deadline")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"the deadline must be a positive number of seconds, not {text!r}")
    return value
