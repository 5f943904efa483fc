"""The layout rules that ARCHITECTURE.md states, checked on the source tree.

- the checkout is the package: `tasks/` and `namespaces/` are importable as
  `actorhub.tasks` / `actorhub.namespaces` from the repository root, and the installed
  package is the same files;
- only the wire layer, the gRPC services and generated code touch gRPC;
- the kernel core has no import cycle: arrows point from the API to the runtime to the wire;
- modules stay small.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import actorhub

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "actorhub"

# Where gRPC may appear: the client layer, the servers, generated code. The node's zygote
# speaks protobuf frames over a pipe (it forks before any gRPC thread may exist).
GRPC_ALLOWED = (
    "actorhub/wire/",
    "actorhub/_proto/",
    "actorhub/hub/",
    "actorhub/node/",
    "actorhub/worker/",
    "actorhub/object_store/service.py",
    "actorhub/gateway/grpc_service.py",  # the gateway's public gRPC service
)
KERNEL_LAYERS = ("actorhub.api", "actorhub.runtime", "actorhub.wire")
MAX_MODULE_LINES = 550


def _modules() -> Iterator[tuple[str, Path]]:
    """(dotted name, path) of every module of the package, through the links as imported."""
    found = []
    # os.walk, not Path.rglob: rglob does not descend into the links to tasks/ and namespaces/.
    for folder, dirs, files in os.walk(PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d not in ("_proto", "__pycache__")]
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    for path in sorted(found):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def test_the_checkout_is_the_package() -> None:
    # -S: no site-packages, so nothing but the checkout itself can answer the import.
    code = "import actorhub.tasks, actorhub.namespaces; print(actorhub.tasks.__file__, actorhub.namespaces.__file__)"
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    tasks_file, namespaces_file = out.stdout.split()
    assert Path(tasks_file).resolve() == (REPO / "tasks" / "__init__.py").resolve()
    assert Path(namespaces_file).resolve() == (REPO / "namespaces" / "__init__.py").resolve()
    # The interpreter running the tests imports the same tree it would install.
    assert Path(actorhub.__file__).resolve().parent == PACKAGE.resolve()


def test_grpc_stays_in_the_wire_layer_and_the_servers() -> None:
    leaks = []
    for _, path in _modules():
        rel = path.resolve().relative_to(REPO).as_posix()
        shown = path.relative_to(REPO).as_posix()
        if any(shown.startswith(a) or rel.startswith(a) for a in GRPC_ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "grpc.RpcError" in line or "_pb2" in line:
                leaks.append(f"{shown}:{number}: {line.strip()}")
    assert not leaks, "gRPC outside the wire layer and the servers:\n" + "\n".join(leaks)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `path` imports, wherever the import stands (lazy ones count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def test_no_import_cycle_in_the_kernel_core() -> None:
    modules = dict(_modules())
    core = {name for name in modules if name.startswith(KERNEL_LAYERS)}
    graph = {name: _imports(modules[name], core) - {name} for name in core}
    # Depth-first search for a back edge; report the cycle it closes.
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(core):
        if name not in state:
            cycle = visit(name)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_stay_small() -> None:
    big = {
        name: n
        for name, path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not big, f"modules over {MAX_MODULE_LINES} lines; split them by concept: {big}"
