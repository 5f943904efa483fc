"""`actorhub serve-gateway`: serve a cluster's named typed actors over HTTP/JSON and gRPC, in the
foreground, until SIGTERM or Ctrl-C (actorhub/gateway/)."""

from __future__ import annotations

import argparse

from actorhub.cluster import addresses

HELP = "serve the named typed actors of a cluster over HTTP/JSON and gRPC, for callers in any language"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve-gateway", help=HELP, description=HELP)
    parser.add_argument("--port", type=int, required=True, help="the HTTP port (0: a free one, printed)")
    parser.add_argument("--grpc-port", type=int, default=0, metavar="PORT",
                        help="the gRPC port (default: a free one, printed; -1: no gRPC)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address both bind (default: 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--address", metavar="HOST:PORT", default="auto",
                        help="the hub (default: the newest running cluster on this machine; the token from "
                             "ACTORHUB_TOKEN or ACTORHUB_TOKEN_FILE for a cluster elsewhere)")


def serve_gateway_command(args: argparse.Namespace) -> int:
    from actorhub.gateway.server import GatewayOptions, run

    addresses.check_port(args.port, "--port", allow_zero=True)
    grpc_port = None if args.grpc_port == -1 else args.grpc_port
    if grpc_port is not None:
        addresses.check_port(grpc_port, "--grpc-port", allow_zero=True)
    return run(GatewayOptions(args.address, args.host, args.port, grpc_port))
