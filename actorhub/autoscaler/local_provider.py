"""The local provider: worker nodes are node agents started as processes on this machine.

A node is what `actorhub start --address` starts (`launcher.start_node`), in the head's session,
declaring its type's resources. Stopping one is SIGTERM to its agent, which leaves the cluster as
a node does (its workers end, its lease ends, so the hub takes it as gone); one still running
`TERMINATE_GRACE_S` later is SIGKILLed with its process group.

The nodes started are written to `autoscaler-nodes.json` in the session, so that an autoscaler
started again on the same cluster (after a crash) manages them instead of forgetting them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from actorhub.autoscaler.config import ClusterConfig
from actorhub.autoscaler.provider import NodeProvider
from actorhub.cluster.launcher import start_node
from actorhub.cluster.session import Session
from actorhub.config import Config
from actorhub.runtime.ids import new_id

STATE_FILE = "autoscaler-nodes.json"
TERMINATE_GRACE_S = 10.0


@dataclass
class _LocalNode:
    node_type: str
    pid: int
    process: subprocess.Popen[bytes] | None = None  # None: started by an earlier autoscaler
    stopping_since: float | None = None


class LocalNodeProvider(NodeProvider):
    def __init__(
        self, cluster: ClusterConfig, session: Session, hub_address: str, base: Config,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`base`: the configuration node agents start from (addresses, TLS, session root)."""
        self._cluster = cluster
        self._session = session
        self._hub_address = hub_address
        self._base = base
        self._clock = clock
        self._state = session.path / STATE_FILE
        self._nodes: dict[str, _LocalNode] = self._load()

    def create_node(self, node_type: str) -> str:
        node_id = new_id(8)
        process = start_node(self._node_config(node_type), self._session, self._hub_address, node_id)
        self._nodes[node_id] = _LocalNode(node_type, process.pid, process)
        self._save()
        return node_id

    def terminate_node(self, node_id: str) -> None:
        node = self._nodes.get(node_id)
        if node is None or node.stopping_since is not None:
            return
        node.stopping_since = self._clock()
        self._signal(node, signal.SIGTERM, group=False)

    def non_terminated_nodes(self) -> list[str]:
        self._sweep()
        return [node_id for node_id, node in self._nodes.items() if node.stopping_since is None]

    def node_type_of(self, node_id: str) -> str:
        return self._nodes[node_id].node_type

    def close(self) -> None:
        self._save()

    # -- processes ----------------------------------------------------------------------------------
    def _node_config(self, node_type: str) -> Config:
        spec = self._cluster.available_node_types[node_type]
        vector = spec.vector()
        update: dict[str, object] = {
            "num_cpus": vector["CPU"], "num_gpus": int(vector.get("GPU", 0)), "resources": spec.custom(),
            "memory": int(vector["memory"]) if "memory" in vector else None,
        }
        if spec.node_config.object_store_memory is not None:
            update["object_store_memory"] = spec.node_config.object_store_memory
        if spec.node_config.prestart_workers is not None:
            update["prestart_workers"] = spec.node_config.prestart_workers
        return self._base.model_copy(update=update)

    def _sweep(self) -> None:
        """Forget nodes whose processes ended; SIGKILL those that outlived their grace."""
        now = self._clock()
        changed = False
        for node_id, node in list(self._nodes.items()):
            if not self._running(node, node_id):
                del self._nodes[node_id]
                changed = True
            elif node.stopping_since is not None and now - node.stopping_since > TERMINATE_GRACE_S:
                self._signal(node, signal.SIGKILL, group=True)
        if changed:
            self._save()

    @staticmethod
    def _running(node: _LocalNode, node_id: str) -> bool:
        if node.process is not None:
            return node.process.poll() is None  # reaps it once it ended
        try:  # not our child: its pid may have been reused, so look at what runs under it
            return f"--node-id\0{node_id}".encode() in Path(f"/proc/{node.pid}/cmdline").read_bytes()
        except OSError:
            return False

    @staticmethod
    def _signal(node: _LocalNode, signum: int, group: bool) -> None:
        """Only while the process is the node's (a child not yet reaped, or checked by cmdline)."""
        if node.process is not None and node.process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            if group:
                os.killpg(node.pid, signum)  # the agent leads its group, with its zygote
            else:
                os.kill(node.pid, signum)

    # -- the state file -----------------------------------------------------------------------------
    def _load(self) -> dict[str, _LocalNode]:
        try:
            saved = json.loads(self._state.read_text())
        except (OSError, ValueError):
            return {}
        nodes: dict[str, _LocalNode] = {}
        for node_id, entry in saved.items() if isinstance(saved, dict) else ():
            node = _LocalNode(str(entry.get("type", "")), int(entry.get("pid", 0)))
            if node.node_type in self._cluster.available_node_types and self._running(node, node_id):
                nodes[node_id] = node
        return nodes

    def _save(self) -> None:
        entries = {node_id: {"type": node.node_type, "pid": node.pid} for node_id, node in self._nodes.items()}
        temporary = self._state.with_suffix(".tmp")
        temporary.write_text(json.dumps(entries, indent=1))
        temporary.replace(self._state)
