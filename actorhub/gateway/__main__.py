"""`python -m actorhub.gateway`: the gateway a head starts beside its hub (`actorhub start --head
--gateway-port N`, cluster/launcher.py); `actorhub serve-gateway` runs the same in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from actorhub.gateway.server import PID_ROLE, GatewayOptions, run


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m actorhub.gateway")
    parser.add_argument("--address", required=True, help="the hub's HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--session-dir", type=Path, required=True)
    parser.add_argument("--hub-supervisor-pid", type=int, required=True,
                        help="the hub's supervisor: when it has exited, the cluster is gone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pid_file = args.session_dir / f"{PID_ROLE}.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        return run(GatewayOptions(args.address, args.host, args.port, args.grpc_port, args.session_dir,
                                  args.hub_supervisor_pid))
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text()) == os.getpid():
                pid_file.unlink()


if __name__ == "__main__":
    sys.exit(main())
