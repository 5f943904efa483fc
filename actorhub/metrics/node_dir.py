"""Where a node's processes write their metrics: prometheus_client's multiprocess directory.

Standard library only: the node agent calls `prepare` before it forks its zygote, so every
worker (and every zygote of a pip runtime_env) inherits PROMETHEUS_MULTIPROC_DIR, which
prometheus_client reads when it is imported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# In the head's session: the scrape targets, in Prometheus' file_sd format (hub/metrics_export.py).
SERVICE_DISCOVERY_FILE = "prom_metrics_service_discovery.json"


def dir_for(session_dir: Path, node_id: str) -> Path:
    """One directory per node: two node agents of one host share the session directory."""
    return session_dir / "metrics" / f"node-{node_id}"


def prepare(session_dir: Path, node_id: str) -> Path:
    """Empty the node's directory (prometheus_client's rule: a new run starts with none of the
    last one's files) and point this process and its children at it."""
    path = dir_for(session_dir, node_id)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    return path
