"""runtime_env: env_vars, working_dir, py_modules and pip for jobs, actors and tasks.

One cluster for the module (a fresh session, so the pip environment is really installed from
the package index once here); the job-level env runs in a driver of its own. Bad input is
refused at the caller with OptionsError, before anything reaches the cluster.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _drivers import run_driver

import actorhub
from actorhub.exceptions import OptionsError, RuntimeEnvSetupError
from actorhub.runtime_env import RuntimeEnv, packaging
from actorhub.runtime_env.spec import RuntimeEnvSpec, merge, parse

# Small and pure Python, not installed in the base environment (checked below).
PIP_PACKAGE = "tinydb"
MISSING_PACKAGE = "actorhub-no-such-package-7f3c"


@actorhub.remote
class Probe:
    def env(self, *names: str) -> dict[str, str | None]:
        return {name: os.environ.get(name) for name in names}

    def pid(self) -> int:
        return os.getpid()

    def context_env(self) -> dict[str, Any]:
        return actorhub.get_runtime_context().runtime_env

    def spawn(self, runtime_env: dict[str, Any] | None, *names: str) -> tuple[dict[str, str | None], dict[str, Any]]:
        """What an actor and a task created here with `runtime_env` see: they inherit this env."""
        child = Probe.options(runtime_env=runtime_env).remote()
        task = read_env.options(runtime_env=runtime_env).remote(*names)
        actor_view = actorhub.get(child.env.remote(*names))
        actorhub.kill(child)
        return actor_view, actorhub.get(task)

    def read(self) -> tuple[Any, ...]:
        import helper  # from the working_dir
        import mylib  # a py_modules package
        import single  # a py_modules file

        with open("data.txt") as f:  # by a path relative to the working_dir
            data = f.read().strip()
        return helper.VALUE, data, os.getcwd(), sys.path[0], mylib.NAME, single.X, os.path.exists("big.bin")

    def pip_module(self) -> str:
        module = __import__(PIP_PACKAGE)
        return str(module.__file__)


@actorhub.remote
def read_env(*names: str) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


@actorhub.remote(runtime_env={"env_vars": {"RE_D": "deco"}})
def decorated_env(name: str) -> str | None:
    return os.environ.get(name)


@actorhub.remote
def task_pid(name: str) -> tuple[int, str | None]:
    time.sleep(0.05)  # long enough that the two envs' tasks overlap
    return os.getpid(), os.environ.get(name)


@actorhub.remote
def pip_module() -> str:
    return str(__import__(PIP_PACKAGE).__file__)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    wd = root / "wd"
    wd.mkdir()
    (wd / "helper.py").write_text("VALUE = 41\n")
    (wd / "data.txt").write_text("hello from the working_dir\n")
    (wd / "big.bin").write_bytes(b"x" * 1000)  # left out by excludes
    (root / "mylib").mkdir()
    (root / "mylib" / "__init__.py").write_text("NAME = 'mylib'\n")
    (root / "single.py").write_text("X = 7\n")
    return root


def test_env_vars_on_an_actor_and_a_task(shared_cluster: actorhub.ClusterContext) -> None:
    actor = Probe.options(runtime_env={"env_vars": {"RE_A": "actor"}}).remote()
    assert actorhub.get(actor.env.remote("RE_A", "RE_T")) == {"RE_A": "actor", "RE_T": None}
    assert actorhub.get(actor.context_env.remote()) == {"env_vars": {"RE_A": "actor"}}
    task = read_env.options(runtime_env={"env_vars": {"RE_T": "task"}}).remote("RE_A", "RE_T")
    assert actorhub.get(task) == {"RE_A": None, "RE_T": "task"}
    # @remote(runtime_env=...) as well as .options(): the same env for every call.
    assert actorhub.get(decorated_env.remote("RE_D")) == "deco"
    assert actorhub.get(read_env.remote("RE_T")) == {"RE_T": None}  # no env: none of theirs
    # Ray's RuntimeEnv class, a checked dict, is accepted as well.
    typed = read_env.options(runtime_env=RuntimeEnv(env_vars={"RE_T": "typed"})).remote("RE_T")
    assert actorhub.get(typed) == {"RE_T": "typed"}
    with pytest.raises(OptionsError, match="'conda' is not supported"):
        RuntimeEnv(conda="env")
    actorhub.kill(actor)


def test_what_an_actor_creates_inherits_its_env_merged_as_ray_merges(shared_cluster: actorhub.ClusterContext) -> None:
    parent = Probe.options(runtime_env={"env_vars": {"RE_P": "parent", "RE_S": "parent"}}).remote()
    names = ("RE_P", "RE_S", "RE_C")
    actor_view, task_view = actorhub.get(parent.spawn.remote(None, *names))
    assert actor_view == task_view == {"RE_P": "parent", "RE_S": "parent", "RE_C": None}
    # env_vars merge key by key, the child's winning.
    actor_view, task_view = actorhub.get(parent.spawn.remote({"env_vars": {"RE_S": "child", "RE_C": "child"}}, *names))
    assert actor_view == task_view == {"RE_P": "parent", "RE_S": "child", "RE_C": "child"}
    actorhub.kill(parent)


def test_merge_takes_each_field_from_the_child_but_merges_env_vars() -> None:
    parent = parse({"env_vars": {"A": "1", "B": "1"}, "pip": ["x"]})
    child = parse({"env_vars": {"B": "2"}, "pip": ["y"]})
    assert merge(parent, child) == RuntimeEnvSpec(env_vars={"A": "1", "B": "2"}, pip=("y",))
    assert merge(parent, None) == parent and merge(None, child) == child
    assert parse({}) is None and parse(None) is None


def test_working_dir_and_py_modules(shared_cluster: actorhub.ClusterContext, project: Path) -> None:
    env = {
        "working_dir": str(project / "wd"),
        "py_modules": [str(project / "mylib"), str(project / "single.py")],
        "excludes": ["*.bin"],
    }
    actor = Probe.options(runtime_env=env).remote()
    value, data, cwd, first_path, name, x, has_big = actorhub.get(actor.read.remote())
    assert (value, data, name, x, has_big) == (41, "hello from the working_dir", "mylib", 7, False)
    assert cwd == first_path and Path(cwd).parent.name == "packages"  # unpacked into the node's cache
    resolved = actorhub.get(actor.context_env.remote())
    assert resolved["working_dir"].startswith("hub://_actorhub_pkg_") and len(resolved["py_modules"]) == 2
    # The same content is one package: uploaded once, unpacked once on the node.
    second = Probe.options(runtime_env=env).remote()
    assert actorhub.get(second.context_env.remote()) == resolved
    session = Path(shared_cluster.address_info["session_dir"])
    assert len(list((session / "runtime_env_packages").glob("*.zip"))) == 3
    assert actorhub.get(second.read.remote())[2] == cwd
    for handle in (actor, second):
        actorhub.kill(handle)


def test_packages_are_reproducible_and_honour_excludes(project: Path) -> None:
    first = packaging.working_dir_package(str(project / "wd"), ())
    assert packaging.working_dir_package(str(project / "wd"), ()) == first  # same bytes, same URI
    trimmed = packaging.working_dir_package(str(project / "wd"), ("big.bin",))
    assert trimmed.uri != first.uri and packaging.matches_content(trimmed.uri, trimmed.data)
    (project / "wd" / "__pycache__").mkdir(exist_ok=True)
    (project / "wd" / "__pycache__" / "helper.pyc").write_bytes(b"\0")
    assert packaging.working_dir_package(str(project / "wd"), ()) == first  # always left out


def test_a_package_over_the_limit_is_refused_at_the_caller(
    shared_cluster: actorhub.ClusterContext, project: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(packaging, "MAX_PACKAGE_BYTES", 100)
    with pytest.raises(OptionsError, match=r"working_dir .* over the 0 MiB"):
        Probe.options(runtime_env={"working_dir": str(project / "wd"), "excludes": ["nothing"]}).remote()


def test_workers_of_different_envs_never_share_a_process(shared_cluster: actorhub.ClusterContext) -> None:
    one = Probe.options(runtime_env={"env_vars": {"RE_X": "1"}}).remote()
    two = Probe.options(runtime_env={"env_vars": {"RE_X": "2"}}).remote()
    assert actorhub.get(one.pid.remote()) != actorhub.get(two.pid.remote())
    refs = [task_pid.options(runtime_env={"env_vars": {"RE_X": str(i % 2)}}).remote("RE_X") for i in range(8)]
    by_env: dict[str | None, set[int]] = {}
    for pid, value in actorhub.get(refs):
        by_env.setdefault(value, set()).add(pid)
    assert set(by_env) == {"0", "1"} and not by_env["0"] & by_env["1"]
    for handle in (one, two):
        actorhub.kill(handle)


def test_a_desk_retires_idle_executors_of_envs_beyond_its_cpus(shared_cluster: actorhub.ClusterContext) -> None:
    from actorhub.api.cluster import connected_runtime
    from actorhub.namespaces.lookup import get_system_actor
    from actorhub.tasks.lease_desk import desk_name

    for i in range(6):  # one env after another: each leaves an idle executor behind
        assert actorhub.get(read_env.options(runtime_env={"env_vars": {"RE_N": str(i)}}).remote("RE_N")) == {
            "RE_N": str(i)}
    time.sleep(0.3)  # the leases go back
    desk = get_system_actor(connected_runtime(), desk_name(actorhub.get_runtime_context().get_node_id()))
    stats = actorhub.get(desk.stats.remote())
    # The node's 2 CPUs: 2 executors without an env, and at most 2 idle of other envs; without
    # retiring, all 6 would idle.
    assert stats["idle"] <= 4 and stats["leased"] == 0, stats


@pytest.mark.parametrize(("env", "message"), [
    ({"env_vars": {"K": 1}}, r"env_vars\['K'\] must be a str, not int"),
    ({"env_vars": ["K"]}, "env_vars must be a dict"),
    ({"conda": "env"}, "'conda' is not supported"),
    ({"container": {}}, "'container' is not supported"),
    ({"no_such_field": 1}, "unknown runtime_env field 'no_such_field'"),
    ({"working_dir": "/no/such/dir"}, "is not an existing directory"),
    ({"working_dir": "s3://bucket/pkg.zip"}, "only local directories"),
    ({"py_modules": "mylib"}, "py_modules must be a list"),
    ({"pip": "/no/such/requirements.txt"}, "requirements file"),
    ({"pip": ["ok", 3]}, "pip entries must be str"),
    ({"pip": {"packages": ["x"], "pip_version": "1"}}, "not supported"),
    ("env_vars", "runtime_env must be a dict"),
])
def test_bad_runtime_env_raises_options_error(env: Any, message: str) -> None:
    # Checked where given: no cluster is needed to refuse it.
    with pytest.raises(OptionsError, match=message):
        Probe.options(runtime_env=env)
    with pytest.raises(OptionsError, match=message):
        read_env.options(runtime_env=env)
    with pytest.raises(OptionsError, match=message):
        actorhub.remote(runtime_env=env)(Probe)


def test_job_env_from_init_is_inherited_and_merged(tmp_path: Path) -> None:
    wd = tmp_path / "jobdir"
    wd.mkdir()
    (wd / "jobmod.py").write_text("WHERE = 'job working_dir'\n")
    result = run_driver(f"""
        import os, actorhub

        try:
            actorhub.init(runtime_env={{"env_vars": {{"K": 1}}}})
        except actorhub.exceptions.OptionsError as e:
            print("refused:", e)
        job_env = {{"env_vars": {{"JOB": "job", "BOTH": "job"}}, "working_dir": {str(wd)!r}}}
        actorhub.init(num_cpus=1, runtime_env=job_env)

        @actorhub.remote
        def f():
            import jobmod
            return os.environ.get("JOB"), os.environ.get("BOTH"), jobmod.WHERE

        @actorhub.remote
        class A:
            def get(self):
                import jobmod
                return os.environ.get("JOB"), os.environ.get("BOTH"), jobmod.WHERE

        print("task", actorhub.get(f.remote()))
        print("merged", actorhub.get(f.options(runtime_env={{"env_vars": {{"BOTH": "task"}}}}).remote()))
        print("actor", actorhub.get(A.remote().get.remote()))
        print("driver", sorted(actorhub.get_runtime_context().runtime_env), os.environ.get("JOB"))
        actorhub.shutdown()
    """, timeout=90)
    out = result.stdout
    assert "refused: invalid options for init(): runtime_env: env_vars['K'] must be a str, not int" in out
    assert "task ('job', 'job', 'job working_dir')" in out
    assert "merged ('job', 'task', 'job working_dir')" in out
    assert "actor ('job', 'job', 'job working_dir')" in out
    # The driver itself keeps its own environment, as in Ray.
    assert "driver ['env_vars', 'working_dir'] None" in out


@pytest.mark.network
def test_pip_env_installs_once_and_is_reused(shared_cluster: actorhub.ClusterContext, tmp_path: Path) -> None:
    with pytest.raises(ImportError):
        __import__(PIP_PACKAGE)  # not in the base environment: only the env can provide it
    env = {"pip": [PIP_PACKAGE]}
    started = time.monotonic()
    # Concurrent first uses of one env: one install.
    first = [Probe.options(runtime_env=env).remote() for _ in range(2)]
    paths = actorhub.get([a.pip_module.remote() for a in first])
    first_s = time.monotonic() - started
    session = Path(shared_cluster.address_info["session_dir"])
    assert all(f"{session}/runtime_env/pip/" in path for path in paths)
    started = time.monotonic()
    # The same requirements from a file (Ray's dict form): the same environment, reused.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# what the actor needs\n{PIP_PACKAGE}\n")
    again = Probe.options(runtime_env={"pip": {"packages": str(requirements)}}).remote()
    assert actorhub.get(again.pip_module.remote()) == paths[0]
    again_s = time.monotonic() - started
    assert actorhub.get(pip_module.options(runtime_env=env).remote()) == paths[0]  # tasks too
    logs = list((session / "logs").glob("runtime_env-pip-*.log"))
    assert len(logs) == 1 and logs[0].read_text().count("== node") == 1, [p.read_text() for p in logs]
    assert again_s < max(1.0, first_s), (first_s, again_s)  # no second install
    pids = actorhub.get([a.pid.remote() for a in (*first, again)])
    assert len(set(pids)) == 3
    # Workers without the env never see the package.
    base = Probe.remote()
    with pytest.raises(ImportError):
        actorhub.get(base.pip_module.remote())
    for handle in (*first, again, base):
        actorhub.kill(handle)


@pytest.mark.network
def test_a_failing_pip_install_raises_runtime_env_setup_error(shared_cluster: actorhub.ClusterContext) -> None:
    env = {"pip": [MISSING_PACKAGE]}
    actor = Probe.options(runtime_env=env).remote()
    with pytest.raises(RuntimeEnvSetupError, match=f"(?s)pip install {MISSING_PACKAGE} failed.*{MISSING_PACKAGE}"):
        actorhub.get(actor.pid.remote(), timeout=120)
    with pytest.raises(RuntimeEnvSetupError, match="No matching distribution"):
        actorhub.get(pip_module.options(runtime_env=env).remote(), timeout=120)
    # Tasks of that env on a later lease try the setup again (and fail again, with pip's message).
    time.sleep(0.2)
    with pytest.raises(RuntimeEnvSetupError, match=MISSING_PACKAGE):
        actorhub.get(pip_module.options(runtime_env=env).remote(), timeout=120)
    # A failure is not cached: the actor, the first task and the later one each tried pip.
    key = RuntimeEnvSpec(pip=(MISSING_PACKAGE,)).pip_key
    log = Path(shared_cluster.address_info["session_dir"]) / "logs" / f"runtime_env-pip-{key}.log"
    assert log.read_text().count("== node") == 3


def test_packages_reach_a_node_on_another_host_over_the_network(tmp_path: Path) -> None:
    """Head on A, a node on B, a driver on C whose working_dir and py_modules only C has: B's
    node fetches the packages from the hub and unpacks them into B's own session."""
    from _loopback_hosts import Host, hub_address

    a, b, c = (Host(name, f"127.0.0.{i}", tmp_path / name) for i, name in ((2, "a"), (3, "b"), (4, "c")))
    project = c.home / "project"
    (project / "wd").mkdir(parents=True)
    (project / "wd" / "notes.txt").write_text("only on C\n")
    (project / "tool.py").write_text("def name():\n    return 'tool from C'\n")
    try:
        out = a.ok("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "1")
        address = hub_address(out)
        token_file = a.session_root / "latest" / "token"
        b.ok("start", "--address", address, "--token-file", str(token_file), "--node-ip-address", b.ip,
             "--num-cpus", "1")
        result = c.driver(f"""
            import os, actorhub
            from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

            actorhub.init(address="{address}")
            node_b = next(n["NodeID"] for n in actorhub.nodes() if n["Alive"] and n["NodeManagerAddress"] == "{b.ip}")
            env = {{"working_dir": {str(project / 'wd')!r}, "py_modules": [{str(project / 'tool.py')!r}]}}

            @actorhub.remote
            def look():
                import tool
                return open("notes.txt").read().strip(), tool.name(), os.getcwd()

            print(actorhub.get(look.options(runtime_env=env, scheduling_strategy=On(node_b)).remote(), timeout=60))
        """, ACTORHUB_TOKEN=(token_file.read_text().strip()))
        assert "('only on C', 'tool from C', " in result.stdout, result.stdout
        assert f"'{b.session_root}/session_" in result.stdout, result.stdout  # unpacked in B's session
    finally:
        for host in (b, a):
            host.stop()
