"""The actorhub command line.

    actorhub start --head [--port N] [--node-ip-address IP] [--num-cpus N] [--store PATH] [--block]
                                                        a hub (supervised) and a node agent that outlive
                                                        the command; the hub's state lives in PATH
    actorhub start --address HOST:PORT [--node-ip-address IP] [--num-cpus N] [--block]
                                                        one more node agent, from this or another machine
        both also take --token-file FILE (or ACTORHUB_TOKEN) and --tls-cert/--tls-key/--tls-ca
    actorhub stop                                       stop every cluster (or joined node) on this machine
    actorhub status [--address HOST:PORT]               nodes, live actors and jobs
    actorhub list actors [--namespace NS | --all-namespaces] [--address HOST:PORT]
    actorhub microbenchmark [--filter TEXT] [--scale X] Ray's actor-call microbenchmarks
    actorhub logs [--actor NAME|ID] [--node ID] [-f]    workers' output, from this machine's log files

Failures the user can act on (no cluster, an unreachable hub) print one line to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from actorhub.exceptions import ActorHubError

__all__ = ["main"]

_ADDRESS_HELP = "the hub (default: the latest running cluster on this machine)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actorhub", description="Start, stop and inspect actorhub clusters.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="start a cluster (--head) or add a node to one (--address)")
    role = start.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="start a hub and a node agent on this machine")
    role.add_argument("--address", metavar="HOST:PORT",
                      help="add a node agent to the hub at HOST:PORT, on this machine or another one")
    start.add_argument("--port", type=int, default=None, help="the hub's port (--head only; default: a free one)")
    start.add_argument("--node-ip-address", metavar="IP", default=None,
                       help="the address of this machine that every server here binds and advertises to the "
                            "others (default: 127.0.0.1 for --head, else the address that routes to the hub; "
                            "0.0.0.0 is refused: give a concrete address)")
    start.add_argument("--num-cpus", type=float, default=None, help="CPUs the node offers (default: all)")
    start.add_argument("--num-gpus", type=int, default=None, help="GPUs the node offers, ids 0..N-1 (default: 0)")
    start.add_argument("--memory", type=int, default=None, metavar="BYTES",
                       help="the memory resource the node offers (default: available memory less the object store)")
    start.add_argument("--resources", default=None, metavar="JSON",
                       help='custom resources the node offers, e.g. \'{"x86": 1}\'')
    start.add_argument("--token-file", type=Path, metavar="FILE", default=None,
                       help="the cluster token (default: $ACTORHUB_TOKEN; --head without either makes one)")
    start.add_argument("--tls-cert", type=Path, metavar="PEM", default=None, help="this host's TLS certificate")
    start.add_argument("--tls-key", type=Path, metavar="PEM", default=None, help="the certificate's private key")
    start.add_argument("--tls-ca", type=Path, metavar="PEM", default=None,
                       help="the CA every peer's certificate is verified against")
    start.add_argument("--store", type=Path, metavar="PATH", default=None,
                       help="the hub's durable store, e.g. on a persistent volume (--head only; default: "
                            "control.sqlite3 in the session directory)")
    start.add_argument("--block", action="store_true",
                       help="stay in the foreground while the processes run; SIGTERM or SIGINT stops them")

    commands.add_parser("stop", help="stop every cluster started on this machine")

    status = commands.add_parser("status", help="show a cluster's nodes, actors and jobs")
    status.add_argument("--address", metavar="HOST:PORT", help=_ADDRESS_HELP)

    listing = commands.add_parser("list", help="list a cluster's resources")
    kinds = listing.add_subparsers(dest="kind", required=True, metavar="KIND")
    actors = kinds.add_parser("actors", help="one line per live actor")
    scope = actors.add_mutually_exclusive_group()
    scope.add_argument("--namespace", metavar="NS", help="only actors in this namespace")
    scope.add_argument("--all-namespaces", action="store_true", help="actors in every namespace (the default)")
    actors.add_argument("--address", metavar="HOST:PORT", help=_ADDRESS_HELP)

    memory = commands.add_parser("memory", help="objects in each node's shared-memory store")
    memory.add_argument("--address", metavar="HOST:PORT", help=_ADDRESS_HELP)

    bench = commands.add_parser("microbenchmark", help="run Ray's actor-call microbenchmarks on a fresh cluster")
    bench.add_argument(
        "--filter",
        metavar="TEXT",
        default=None,
        help="only metrics whose name contains TEXT (default: $TESTS_TO_RUN, as in Ray, or all)",
    )
    bench.add_argument(
        "--scale", type=float, default=1.0, metavar="X", help="multiply every timed duration by X (0.1: a smoke run)"
    )
    from actorhub.cli.health import add_parser as add_health_check

    add_health_check(commands)
    from actorhub.cli.logs import add_parser as add_logs

    add_logs(commands)
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "health-check":
        from actorhub.cli.health import health_check_command

        return health_check_command(args.address, args.node, args.timeout, args.node_ip_address)
    # Imported per command so that `actorhub --help` and each command load only what they use.
    if args.command == "start":
        from actorhub.cli.cluster import StartFlags, start_head_command, start_node_command

        flags = StartFlags(num_cpus=args.num_cpus, node_ip_address=args.node_ip_address, token_file=args.token_file,
                           tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca, block=args.block,
                           num_gpus=args.num_gpus, memory=args.memory, resources=args.resources)
        if args.head:
            return start_head_command(args.port, args.store, flags)
        if args.port is not None:
            parser.error("--port applies to --head only")
        if args.store is not None:
            parser.error("--store applies to --head only")
        return start_node_command(args.address, flags)
    if args.command == "stop":
        from actorhub.cli.cluster import stop_command

        return stop_command()
    if args.command == "status":
        from actorhub.cli.inspect import status_command

        return status_command(args.address)
    if args.command == "list":
        from actorhub.cli.inspect import list_actors_command

        return list_actors_command(args.address, args.namespace)
    if args.command == "memory":
        from actorhub.cli.inspect import memory_command

        return memory_command(args.address)
    if args.command == "logs":
        from actorhub.cli.logs import logs_command

        return logs_command(args.actor, args.node, args.follow, args.session)
    if args.command == "microbenchmark":
        from actorhub.cli import microbenchmark as _microbenchmark
        if args.scale <= 0:
            parser.error("--scale must be positive")
        # The environment is read here, at the edge, like Ray's TESTS_TO_RUN.
        text = args.filter if args.filter is not None else os.environ.get("TESTS_TO_RUN", "")
        _microbenchmark.main(text, scale=args.scale)
        return 0
    parser.error(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """The `actorhub` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    from actorhub.cli.common import CliError

    try:
        return _run(args, parser)
    except (CliError, ActorHubError) as err:
        message = str(err).strip() or type(err).__name__
        print(f"actorhub {args.command}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) left; stop quietly, and keep the interpreter's final
        # flush of stdout from raising the same error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
