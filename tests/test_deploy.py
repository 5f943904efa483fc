"""deploy/: the manifests are valid Kubernetes objects, agree with each other, and their
commands run a cluster; `actorhub health-check`, which their probes run.

There is no container runtime here, so the containers' commands run as plain processes: each
"pod" gets its own TMPDIR, HOME and loopback address (127.0.0.x), and the pods share nothing
but the network and the token, as pods do. Names the manifests use (the head's Service, the
volume's mount path, the pod's IP) are mapped to this machine's, and nothing else is changed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from _procs import stop
from kubernetes_validate.utils import all_versions

import actorhub
from actorhub.object_store import shm as _shm

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
# The Kubernetes version the manifests are validated against (its schemas ship with the
# pinned kubernetes-validate, so the check needs no network).
KUBERNETES_VERSION = "1.33.0"
BIN = Path(sys.executable).parent
ACTORHUB = str(BIN / "actorhub") if (BIN / "actorhub").exists() else (shutil.which("actorhub") or "actorhub")
HEAD_IP, WORKER_IPS = "127.0.0.1", ("127.0.0.2", "127.0.0.3")


# -- reading the manifests ------------------------------------------------------------------

def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return found


def _one(kind: str, component: str | None = None) -> dict[str, Any]:
    matches = [
        doc for _, doc in _documents()
        if doc["kind"] == kind
        and (component is None or doc["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]
    assert len(matches) == 1, f"expected one {kind} {component or ''} in deploy/k8s, found {len(matches)}"
    return matches[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def _quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("500m", "2", "4Gi", "768Mi") as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match, f"not a quantity: {text!r}"
    return float(match.group(1)) * (units[match.group(2)] if match.group(2) else 1)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _head_service() -> tuple[str, int]:
    service = _one("Service")
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "hub"]
    return service["metadata"]["name"], int(port)


# -- (1) the manifests ------------------------------------------------------------------------

def test_every_manifest_is_valid_for_the_pinned_kubernetes_version() -> None:
    assert KUBERNETES_VERSION in {str(v) for v in all_versions()}, "the pinned version's schemas are not shipped"
    documents = _documents()
    assert {doc["kind"] for _, doc in documents} >= {"Secret", "Service", "StatefulSet", "Deployment", "Job"}
    for name, doc in documents:
        # strict: a misspelt or misplaced field is an error, not silently ignored.
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {err.message} at {list(err.path)}")
        assert "namespace" not in doc["metadata"], f"{name}: manifests are applied to whichever namespace"


def test_a_broken_manifest_is_refused_by_the_validator() -> None:
    # The check above would pass on anything if the validator accepted everything.
    deployment = _one("Deployment")
    broken = json.loads(json.dumps(deployment))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenessprobe"] = container.pop("livenessProbe")  # misspelt: strict refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_cpu_requests_and_limits_equal_num_cpus() -> None:
    for workload in (_one("StatefulSet", "head"), _one("Deployment", "worker")):
        container = _container(workload)
        num_cpus = float(_flag(container["args"], "--num-cpus"))
        resources = container["resources"]
        assert _quantity(resources["requests"]["cpu"]) == num_cpus, workload["metadata"]["name"]
        assert _quantity(resources["limits"]["cpu"]) == num_cpus, workload["metadata"]["name"]


def test_the_head_keeps_its_store_on_the_claimed_volume() -> None:
    head = _one("StatefulSet", "head")
    service_name, port = _head_service()
    assert head["spec"]["replicas"] == 1
    assert head["spec"]["serviceName"] == service_name
    args = _container(head)["args"]
    assert args[:2] == ["start", "--head"] and "--block" in args
    assert int(_flag(args, "--port")) == port
    store = Path(_flag(args, "--store"))
    claims = {t["metadata"]["name"] for t in head["spec"]["volumeClaimTemplates"]}
    mounts = [m for m in _container(head)["volumeMounts"] if m["name"] in claims]
    assert len(mounts) == 1, "the head mounts one claimed volume"
    assert store.is_relative_to(mounts[0]["mountPath"]), f"--store {store} is not on {mounts[0]['mountPath']}"


def test_workers_join_the_heads_service() -> None:
    service_name, port = _head_service()
    service = _one("Service")
    assert service["spec"]["selector"] == _one("StatefulSet", "head")["spec"]["template"]["metadata"]["labels"]
    worker = _one("Deployment", "worker")
    args = _container(worker)["args"]
    assert args[:1] == ["start"] and "--block" in args
    assert _flag(args, "--address") == f"{service_name}:{port}"


def test_cluster_containers_get_the_token_their_ip_and_shared_memory() -> None:
    secret = _one("Secret")
    for workload in (_one("StatefulSet", "head"), _one("Deployment", "worker")):
        container = _container(workload)
        env = _env(container)
        token = env["ACTORHUB_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token["name"] == secret["metadata"]["name"] and token["key"] in secret["stringData"]
        for name in ("POD_IP", "ACTORHUB_NODE_IP_ADDRESS"):
            assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert _flag(container["args"], "--node-ip-address") == "$(POD_IP)"
        # The object store's arena is a file in /dev/shm: a memory-backed volume at least as
        # large as the store, inside the container's memory request.
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        (shm_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        shm_volume = volumes[shm_mount["name"]]["emptyDir"]
        assert shm_volume["medium"] == "Memory"
        store_bytes = int(env["ACTORHUB_OBJECT_STORE_MEMORY"]["value"])
        assert _quantity(shm_volume["sizeLimit"]) >= store_bytes
        memory = _quantity(container["resources"]["requests"]["memory"])
        assert memory > _quantity(shm_volume["sizeLimit"]) and memory == _quantity(
            container["resources"]["limits"]["memory"]
        )


def test_probes_run_the_health_check() -> None:
    service_name, port = _head_service()
    for workload, needs_node in ((_one("StatefulSet", "head"), False), (_one("Deployment", "worker"), True)):
        container = _container(workload)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["actorhub", "health-check"], (workload["metadata"]["name"], probe)
            assert "--node" in command or not needs_node, (workload["metadata"]["name"], probe)
            if "--address" in command:
                assert _flag(command, "--address") == f"{service_name}:{port}"
            # The check's own deadline (3 s by default) fits in the probe's, with a start-up.
            assert container[probe]["timeoutSeconds"] >= 5


def test_the_image_runs_actorhub_as_a_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    entrypoint = json.loads(re.findall(r"^ENTRYPOINT (.*)$", dockerfile, re.M)[-1])
    assert entrypoint[-1] == "actorhub", entrypoint
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)[-1]
    assert user.split(":")[0] not in ("root", "0")
    # The pods' securityContext runs as the image's user (whose uid owns its home).
    uid = int(user.split(":")[0])
    for _, doc in _documents():
        if doc["kind"] in ("StatefulSet", "Deployment", "Job"):
            context = doc["spec"]["template"]["spec"]["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == uid


def _copy_context(destination: Path) -> None:
    """What `COPY . .` copies: the repository less deploy/Dockerfile.dockerignore's patterns."""
    patterns = [
        line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def matches(path: str, name: str, pattern: str) -> bool:
        # Docker's rules, as far as the file uses them: "**/" matches at any depth, anything
        # else is relative to the context's root.
        return fnmatch(name, pattern[3:]) if pattern.startswith("**/") else fnmatch(path, pattern)

    def ignored(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(REPO)
        return {name for name in names if any(matches((rel / name).as_posix(), name, p) for p in patterns)}

    shutil.copytree(REPO, destination, symlinks=True, ignore=ignored)


def test_the_image_build_installs_the_whole_package(tmp_path: Path) -> None:
    # The image's `pip wheel .` of the build context, without a container: every module must be
    # in the wheel, including those that reach the package through the links to tasks/ and
    # namespaces/, and the console script that is the entrypoint.
    context = tmp_path / "context"
    _copy_context(context)
    assert (context / "actorhub" / "tasks").is_symlink()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "--wheel-dir",
         str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("actorhub-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        p.relative_to(REPO).as_posix()
        for folder in ("actorhub", "tasks", "namespaces")
        for p in (REPO / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    expected = {
        name if name.startswith("actorhub/") else f"actorhub/{name}" for name in sources
    }
    assert expected - names == set(), f"missing from the image's wheel: {sorted(expected - names)}"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "actorhub = actorhub.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# -- actorhub health-check --------------------------------------------------------------------

def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_check_fails_in_one_line_without_a_hub(tmp_path: Path) -> None:
    assert "no running cluster" in _one_line_failure(_run([ACTORHUB, "health-check"]))
    env = {**os.environ, "ACTORHUB_TOKEN": "x" * 64}
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    line = _one_line_failure(_run([ACTORHUB, "health-check", "--address", address, "--node"], env))
    assert line.startswith("actorhub health-check: unhealthy: the hub at") and address in line, line
    assert time.monotonic() - started < 15


def test_health_check_passes_on_a_running_cluster_and_names_what_fails(
    cluster: actorhub.ClusterContext, tmp_path: Path
) -> None:
    # The latest cluster on this machine, as `actorhub status` finds it.
    result = _run([ACTORHUB, "health-check"])
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"healthy: the hub at {cluster.address} answers"), result.stdout
    result = _run([ACTORHUB, "health-check", "--node", "--address", cluster.address])
    assert result.returncode == 0, result
    assert f"node {cluster.node_id} at " in result.stdout, result.stdout

    line = _one_line_failure(_run([ACTORHUB, "health-check", "--node", "--node-ip-address", "127.0.0.9"]))
    assert "no alive node at 127.0.0.9 is registered" in line and cluster.node_id in line, line

    # From elsewhere (no local session): the token comes from ACTORHUB_TOKEN, and a wrong one
    # is named.
    elsewhere = {**os.environ, "ACTORHUB_SESSION_ROOT": str(tmp_path / "no-sessions"), "ACTORHUB_TOKEN": "0" * 64}
    line = _one_line_failure(_run([ACTORHUB, "health-check", "--address", cluster.address], elsewhere))
    assert "refused the token from ACTORHUB_TOKEN" in line, line

    # A node agent that is registered but wedged: the hub still counts it alive (its lease
    # stream is open), the direct call times out.
    node_pid = _node_agent_pid(cluster)
    stop(node_pid)
    try:
        started = time.monotonic()
        line = _one_line_failure(_run([ACTORHUB, "health-check", "--node", "--timeout", "1"]))
        assert f"node {cluster.node_id}" in line and "did not answer within 1 s" in line, line
        assert time.monotonic() - started < 15
    finally:
        os.kill(node_pid, signal.SIGCONT)
    assert _run([ACTORHUB, "health-check", "--node"]).returncode == 0


def _node_agent_pid(cluster: actorhub.ClusterContext) -> int:
    return int((Path(cluster.session_dir) / f"node-{cluster.node_id}.pid").read_text().strip())


# -- (2) the manifests' commands, as plain processes ------------------------------------------

@dataclass
class Pod:
    """One pod's container, run as a process on this machine."""

    name: str
    ip: str
    root: Path
    container: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "output.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """Maps the manifests' names to this machine: the head's Service to localhost:PORT, the
    pod IP to a loopback address, the claimed volume to a folder."""

    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.token = token
        self.port = _free_port()
        self.service = "{}:{}".format(*_head_service())
        self.pods: list[Pod] = []
        head = _one("StatefulSet", "head")
        self.volume_path = next(
            m["mountPath"] for m in _container(head)["volumeMounts"]
            if m["name"] in {t["metadata"]["name"] for t in head["spec"]["volumeClaimTemplates"]}
        )

    def pod(self, name: str, ip: str, container: dict[str, Any]) -> Pod:
        root = self.root / name
        for sub in ("tmp", "home", "data"):
            (root / sub).mkdir(parents=True)
        pod = Pod(name, ip, root, container)
        # Nothing of this machine's actorhub settings (the tests' session root) leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORHUB_")}
        env.update(TMPDIR=str(root / "tmp"), HOME=str(root / "home"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        for entry in container.get("env", []):
            source = entry.get("valueFrom", {})
            if "value" in entry:
                env[entry["name"]] = self.localize(entry["value"], pod, env)
            elif source.get("fieldRef", {}).get("fieldPath") == "status.podIP":
                env[entry["name"]] = ip
            elif "secretKeyRef" in source:
                env[entry["name"]] = self.token
            else:
                raise AssertionError(f"{name}: no local stand-in for env {entry}")
        pod.env = env
        self.pods.append(pod)
        return pod

    def localize(self, text: str, pod: Pod, env: dict[str, str]) -> str:
        text = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], text)  # as the kubelet expands args
        text = text.replace(self.service, f"localhost:{self.port}")
        if text.startswith(self.volume_path + "/"):
            text = str(pod.root / "data" / text.removeprefix(self.volume_path + "/"))
        return text

    def command(self, pod: Pod, argv: list[str]) -> list[str]:
        args = [self.localize(a, pod, pod.env) for a in argv]
        if "--head" in args:
            args[args.index("--port") + 1] = str(self.port)
        programs = {"actorhub": ACTORHUB, "python": sys.executable}
        return [programs.get(args[0], args[0]), *args[1:]]

    def entrypoint(self, pod: Pod) -> list[str]:
        """The container's args after the image's entrypoint (`tini -- actorhub`)."""
        return self.command(pod, ["actorhub", *pod.container["args"]])

    def start(self, pod: Pod) -> None:
        with open(pod.log, "wb") as log:
            pod.process = subprocess.Popen(
                self.entrypoint(pod), env=pod.env, cwd=pod.root / "home", stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def probe(self, pod: Pod, probe: str) -> subprocess.CompletedProcess[str]:
        spec = pod.container[probe]
        return _run(self.command(pod, spec["exec"]["command"]), pod.env, timeout=spec["timeoutSeconds"] + 20)

    def wait_healthy(self, pod: Pod, timeout: float = 120.0) -> None:
        """The startup probe, run until it passes, as the kubelet runs it (at most a second apart)."""
        deadline = time.monotonic() + timeout
        while True:
            assert pod.process is not None
            if pod.process.poll() is not None:
                pytest.fail(f"{pod.name} exited with {pod.process.returncode}:\n{pod.output()}")
            result = self.probe(pod, "startupProbe")
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{pod.name} not healthy after {timeout:g} s: {result.stderr}\n{pod.output()}")
            time.sleep(min(pod.container["startupProbe"]["periodSeconds"], 1))

    def terminate(self, pod: Pod, timeout: float) -> int:
        """SIGTERM, as the kubelet sends it, and the exit status within the grace period."""
        assert pod.process is not None
        pod.process.send_signal(signal.SIGTERM)
        try:
            return pod.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{pod.name} still running {timeout:g} s after SIGTERM:\n{pod.output()}")

    def clean_up(self) -> None:
        """After a failure: stop what is left, by pid and then by each pod's own session root."""
        for pod in self.pods:
            if pod.process is not None and pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)
                try:
                    pod.process.wait(20)
                except subprocess.TimeoutExpired:
                    pod.process.kill()
                    pod.process.wait()
            _run([ACTORHUB, "stop"], pod.env)


def _processes_under(root: Path) -> list[str]:
    """Live processes whose command line names a path under `root` (sessions live there)."""
    needle = os.fsencode(root)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            shown = cmdline.replace(b"\0", b" ")[:160]
            found.append(f"{entry}: {shown!r}")
    return found


def _block_is_available() -> bool:
    return "--block" in _run([ACTORHUB, "start", "--help"]).stdout


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "pods", secrets.token_hex(32))
    try:
        yield cluster
    finally:
        cluster.clean_up()


@pytest.mark.timeout(300)
def test_the_manifests_commands_run_a_cluster_and_stop_on_sigterm(pods: Cluster) -> None:
    if not _block_is_available():
        pytest.skip("`actorhub start --help` has no --block yet (the multi-host CLI of issue 10): "
                    "the containers' commands cannot run")
    arenas_before = set(_shm.segment_root().glob("actorhub-*"))
    head_spec, worker_spec = _one("StatefulSet", "head"), _one("Deployment", "worker")
    head = pods.pod("head", HEAD_IP, _container(head_spec))
    pods.start(head)
    pods.wait_healthy(head)

    # Each worker pod: its init container waits for the head, then the node joins by the
    # Service's name.
    (init,) = worker_spec["spec"]["template"]["spec"]["initContainers"]
    workers = [pods.pod(f"worker-{i}", ip, _container(worker_spec)) for i, ip in enumerate(WORKER_IPS)]
    for worker in workers:
        waited = _run(pods.command(worker, init["command"]), worker.env, timeout=120)
        assert waited.returncode == 0, waited
        pods.start(worker)
    for worker in workers:
        pods.wait_healthy(worker)
    for pod in (head, *workers):
        for probe in ("readinessProbe", "livenessProbe"):
            result = pods.probe(pod, probe)
            assert result.returncode == 0, (pod.name, probe, result.stderr)
    # --node is about this pod's node: an address no node has fails.
    stranger = {**workers[0].env, "ACTORHUB_NODE_IP_ADDRESS": "127.0.0.9"}
    readiness = workers[0].container["readinessProbe"]["exec"]["command"]
    line = _one_line_failure(_run(pods.command(workers[0], readiness), stranger))
    assert "no alive node at 127.0.0.9" in line, line

    # The example driver Job's program: an actor and tasks on every node.
    driver_spec = _container(_one("Job"))
    driver = pods.pod("driver", "", driver_spec)
    job = _run(pods.command(driver, driver_spec["command"]), driver.env, timeout=300)
    assert job.returncode == 0, f"driver failed:\n{job.stdout}\n{job.stderr}"
    for ip in (HEAD_IP, *WORKER_IPS):
        assert re.search(rf"^node \w+ at {re.escape(ip)}: an actor and 10 tasks ran there$", job.stdout, re.M), (
            job.stdout
        )

    # A worker pod deleted: SIGTERM stops its node, and its probe fails while the others pass.
    grace = worker_spec["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pods.terminate(workers[0], grace) == 0, workers[0].output()
    assert "unhealthy" in _one_line_failure(pods.probe(workers[0], "readinessProbe"))
    assert pods.probe(workers[1], "readinessProbe").returncode == 0
    assert pods.probe(head, "readinessProbe").returncode == 0

    assert pods.terminate(workers[1], grace) == 0, workers[1].output()
    assert pods.terminate(head, head_spec["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]) == 0, (
        head.output()
    )
    deadline = time.monotonic() + 10
    while (left := _processes_under(pods.root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "processes left after SIGTERM:\n" + "\n".join(left)
    assert set(_shm.segment_root().glob("actorhub-*")) <= arenas_before, "shared memory left after SIGTERM"
    assert "unhealthy" in _one_line_failure(pods.probe(workers[1], "readinessProbe"))
    assert (pods.root / "head" / "data" / Path(_flag(head.container["args"], "--store")).name).exists()
