"""Entry point of the node agent process: ``python -m actorhub.node``.

The zygote is spawned before anything heavy is imported here, so that its interpreter boot
and imports run in parallel with ours; only the standard library is imported until then.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from actorhub.metrics import node_dir
from actorhub.node import zygote as _zygote


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m actorhub.node")
    parser.add_argument("--session-dir", required=True, type=Path)
    parser.add_argument("--hub-address", required=True)
    parser.add_argument("--node-id", default="")
    parser.add_argument("--num-cpus", type=float, default=None)
    parser.add_argument("--num-gpus", type=int, default=None)
    parser.add_argument("--memory", type=int, default=None, help="bytes of the memory resource")
    parser.add_argument("--resources", default=None, help="custom resources as JSON")
    parser.add_argument("--prestart", type=int, default=None, help="idle workers to keep ready")
    parser.add_argument("--object-store-memory", type=int, default=None, help="object store bytes")
    parser.add_argument("--bind-host", default=None)
    parser.add_argument("--head", action="store_true", help="the node started with the hub")
    parser.add_argument("--metrics-export-port", type=int, default=None, help="the Prometheus endpoint's port")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Same format as actorhub.runtime.ids.new_id, without importing anything else first.
    node_id = args.node_id or os.urandom(14).hex()
    logs = args.session_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Before the zygote exists: it and every worker write their metrics there (metrics/node_dir.py).
    node_dir.prepare(args.session_dir, node_id)

    def spawn_zygote() -> _zygote.ZygoteProcess:
        # bind_host None: the zygote resolves it with Config.load, exactly as we do below.
        return _zygote.spawn(
            session_dir=args.session_dir,
            hub_address=args.hub_address,
            bind_host=args.bind_host,
            log_path=logs / f"zygote-{node_id}.log",
        )

    # The first zygote is forked from here once its preload is imported (this process needs
    # most of it too): no second interpreter boot and imports. Replacements are spawned.
    zygote = _zygote.fork(
        session_dir=args.session_dir, hub_address=args.hub_address, bind_host=args.bind_host,
        log_path=logs / f"zygote-{node_id}.log",
    )

    from actorhub.config import Config
    from actorhub.node.agent import NodeOptions, run_node

    config = Config.load(
        bind_host=args.bind_host, num_cpus=args.num_cpus, prestart_workers=args.prestart,
        object_store_memory=args.object_store_memory, num_gpus=args.num_gpus, memory=args.memory,
        resources=args.resources, metrics_export_port=args.metrics_export_port,
    )
    options = NodeOptions(
        session_dir=args.session_dir, hub_address=args.hub_address, node_id=node_id, config=config, head=args.head,
    )
    return run_node(options, zygote, spawn_zygote)


if __name__ == "__main__":
    sys.exit(main())
