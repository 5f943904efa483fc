"""The actorhub command line.

    actorhub start --head [--port N] [--node-ip-address IP] [--num-cpus N] [--store PATH] [--block]
                                                        a hub (supervised) and a node agent that outlive
                                                        the command; the hub's state lives in PATH
    actorhub start --address HOST:PORT [--node-ip-address IP] [--num-cpus N] [--block]
                                                        one more node agent, from this or another machine
        both also take --token-file FILE (or ACTORHUB_TOKEN) and --tls-cert/--tls-key/--tls-ca
    actorhub stop                                       stop every cluster (or joined node) on this machine
    actorhub up CLUSTER_YAML / actorhub down CLUSTER_YAML
                                                        a cluster with an autoscaler (Ray's cluster YAML)
    actorhub status [--address HOST:PORT]               nodes, live actors and jobs
    actorhub list actors [--namespace NS | --all-namespaces] [--address HOST:PORT]
    actorhub microbenchmark [--filter TEXT] [--scale X] Ray's actor-call microbenchmarks
    actorhub logs [--actor NAME|ID] [--node ID] [-f]    workers' output, from this machine's log files
    actorhub job submit|status|logs|stop|list|delete    Ray's Job API, over HTTP to the head's dashboard
    actorhub serve-gateway --port N [--grpc-port M] [--host H] [--address HOST:PORT]
                                                        named typed actors over HTTP/JSON and gRPC

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
    start.add_argument("--enable-object-reconstruction", action="store_true",
                       help="remake task results lost with a node by running their tasks again (--head only)")
    start.add_argument("--include-dashboard", type=_bool_flag, default=True, metavar="true|false",
                       help="serve the dashboard and the Job API (--head only; default: true)")
    start.add_argument("--dashboard-host", metavar="HOST", default=None,
                       help="the address the dashboard binds (--head only; default: 127.0.0.1)")
    start.add_argument("--dashboard-port", type=int, metavar="PORT", default=None,
                       help="the dashboard's port (--head only; default: 8265, or the next free one)")
    start.add_argument("--gateway-port", type=int, metavar="PORT", default=None,
                       help="also serve the named typed actors over HTTP/JSON on this port (--head only; "
                            "see `actorhub serve-gateway`)")
    start.add_argument("--gateway-grpc-port", type=int, metavar="PORT", default=0,
                       help="the gateway's gRPC port (default: a free one, printed)")
    start.add_argument("--gateway-host", metavar="HOST", default="127.0.0.1",
                       help="the address the gateway binds (default: 127.0.0.1)")
    start.add_argument("--metrics-export-port", type=int, metavar="PORT", default=None,
                       help="the port of this node's Prometheus endpoint (default: a free one)")
    start.add_argument("--block", action="store_true",
                       help="stay in the foreground while the processes run; SIGTERM or SIGINT stops them")

    commands.add_parser("stop", help="stop every cluster started on this machine")

    up = commands.add_parser("up", help="start a cluster from a cluster YAML, with an autoscaler (Ray's `ray up`)")
    up.add_argument("config", type=Path, metavar="CLUSTER_YAML")
    down = commands.add_parser("down", help="stop the cluster a cluster YAML names, nodes and autoscaler")
    down.add_argument("config", type=Path, metavar="CLUSTER_YAML")

    status = commands.add_parser("status", help="show a cluster's nodes, actors and jobs")
    status.add_argument("--address", metavar="HOST:PORT", help=_ADDRESS_HELP)

    listing = commands.add_parser("list", help="list a cluster's resources")
    kinds = listing.add_subparsers(dest="kind", required=True, metavar="KIND")
    actors = kinds.add_parser("actors", help="one line per live actor")
    scope = actors.add_mutually_exclusive_group()
    scope.add_argument("--namespace", metavar="NS", help="only actors in this namespace")
    scope.add_argument("--all-namespaces", action="store_true", help="actors in every namespace (the default)")
    actors.add_argument("--address", metavar="HOST:PORT", help=_ADDRESS_HELP)
    from actorhub.cli.state import add_kinds, add_state_flags

    add_state_flags(actors)
    add_kinds(kinds, _ADDRESS_HELP)

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
    from actorhub.cli.jobs import add_parser as add_jobs

    add_jobs(commands)
    from actorhub.cli.gateway import add_parser as add_gateway

    add_gateway(commands)
    from actorhub.cli.drain import add_parser as add_drain

    add_drain(commands)
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "health-check":
        from actorhub.cli.health import health_check_command

        return health_check_command(args.address, args.node, args.timeout, args.node_ip_address)
    # Imported per command so that `actorhub --help` and each command load only what they use.
    if args.command == "start":
        from actorhub.cli.cluster import (
            DashboardFlags,
            GatewayFlags,
            StartFlags,
            start_head_command,
            start_node_command,
        )

        flags = StartFlags(num_cpus=args.num_cpus, node_ip_address=args.node_ip_address, token_file=args.token_file,
                           tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca, block=args.block,
                           num_gpus=args.num_gpus, memory=args.memory, resources=args.resources,
                           enable_object_reconstruction=args.enable_object_reconstruction or None,
                           metrics_export_port=args.metrics_export_port)
        if args.head:
            dashboard = DashboardFlags(args.include_dashboard, args.dashboard_host, args.dashboard_port)
            gateway = None if args.gateway_port is None else GatewayFlags(args.gateway_port, args.gateway_grpc_port,
                                                                          args.gateway_host)
            return start_head_command(args.port, args.store, flags, dashboard, gateway)
        if args.gateway_port is not None:
            parser.error("--gateway-port applies to --head only")
        if args.dashboard_host is not None or args.dashboard_port is not None:
            parser.error("--dashboard-host and --dashboard-port apply to --head only")
        if args.port is not None:
            parser.error("--port applies to --head only")
        if args.store is not None:
            parser.error("--store applies to --head only")
        if args.enable_object_reconstruction:
            parser.error("--enable-object-reconstruction applies to --head only: the cluster's hub tells every process")
        return start_node_command(args.address, flags)
    if args.command in ("up", "down"):
        from actorhub.cli.autoscale import down_command, up_command

        return up_command(args.config) if args.command == "up" else down_command(args.config)
    if args.command == "stop":
        from actorhub.cli.cluster import stop_command

        return stop_command()
    if args.command == "status":
        from actorhub.cli.inspect import status_command

        return status_command(args.address)
    if args.command == "list":
        from actorhub.cli.state import list_command, wants_state_listing

        if wants_state_listing(args):
            return list_command(args)
        from actorhub.cli.inspect import list_actors_command

        return list_actors_command(args.address, args.namespace)
    if args.command == "memory":
        from actorhub.cli.inspect import memory_command

        return memory_command(args.address)
    if args.command == "logs":
        from actorhub.cli.logs import logs_command

        return logs_command(args.actor, args.node, args.follow, args.session)
    if args.command == "job":
        from actorhub.cli.jobs import job_command

        return job_command(args)
    if args.command == "drain":
        from actorhub.cli.drain import drain_command

        return drain_command(args.node_id, args.deadline, args.address)
    if args.command == "serve-gateway":
        from actorhub.cli.gateway import serve_gateway_command

        return serve_gateway_command(args)
    if args.command == "microbenchmark":
        from actorhub.cli import microbenchmark as _microbenchmark
        if args.scale <= 0:
            parser.error("--scale must be positive")
        # The environment is read here, at the edge, like Ray's TESTS_TO_RUN.
        text = args.filter if args.filter is not None else os.environ.get("TESTS_TO_RUN", "")
        _microbenchmark.main(text, scale=args.scale)
        return 0
    parser.error(f"unknown command {args.command!r}")


def _bool_flag(text: str) -> bool:
    """Ray's spelling of boolean flags: `--include-dashboard false`."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


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
