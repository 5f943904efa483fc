"""Named, namespaced and detached actors across separate applications."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from _drivers import COUNTER, driver_script, run_driver

import actorhub
from actorhub.exceptions import ActorDiedError


@actorhub.remote
class Named:
    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def get_tag(self) -> str:
        return self.tag

    def pid(self) -> int:
        return os.getpid()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_duplicate_name_raises_value_error_naming_both(cluster: actorhub.ClusterContext) -> None:
    Named.options(name="svc", namespace="team").remote()
    with pytest.raises(ValueError) as info:
        Named.options(name="svc", namespace="team").remote()
    assert "svc" in str(info.value) and "team" in str(info.value)
    # the same name in another namespace is a different actor
    other = Named.options(name="svc", namespace="other", lifetime="detached").remote("o")
    assert actorhub.get(other.get_tag.remote()) == "o"


def test_get_actor_and_list_named_actors(cluster: actorhub.ClusterContext) -> None:
    # Kept in locals: as in Ray, an actor that is not detached ends with its last handle, named or not.
    a = Named.options(name="alpha").remote("a")
    b = Named.options(name="beta", namespace="elsewhere").remote("b")
    anonymous = Named.remote("anonymous")
    assert actorhub.get(actorhub.get_actor("alpha").get_tag.remote()) == "a"
    assert actorhub.get(actorhub.get_actor("beta", namespace="elsewhere").get_tag.remote()) == "b"
    with pytest.raises(ValueError, match="nobody"):
        actorhub.get_actor("nobody")
    assert actorhub.util.list_named_actors() == ["alpha"]
    everything = actorhub.util.list_named_actors(all_namespaces=True)
    assert {"name": "beta", "namespace": "elsewhere"} in everything
    assert {"name": "alpha", "namespace": cluster.namespace} in everything
    assert actorhub.get_actor("alpha") == a
    del b, anonymous


def test_jobs_get_fresh_anonymous_namespaces(cluster: actorhub.ClusterContext) -> None:
    mine = Named.options(name="mine").remote()
    out = run_driver(
        """
        import actorhub
        actorhub.init(address="auto")
        try:
            actorhub.get_actor("mine")
            print("FOUND")
        except ValueError:
            print("ABSENT", actorhub.get_runtime_context().namespace)
        """
    )
    assert out.stdout.startswith("ABSENT")
    assert cluster.namespace not in out.stdout
    del mine


def test_two_applications_share_a_namespace(cluster: actorhub.ClusterContext) -> None:
    run_driver(
        COUNTER
        + """
actorhub.init(address="auto", namespace="shop")
c = Counter.options(name="orders", lifetime="detached").remote()
assert actorhub.get(c.incr.remote()) == 1
"""
    )
    out = run_driver(
        """
        import actorhub
        actorhub.init(address="auto", namespace="shop")
        print(actorhub.get(actorhub.get_actor("orders").incr.remote()))
        """
    )
    assert out.stdout.strip() == "2"
    # and this driver, in another namespace, reaches it by naming the namespace
    assert actorhub.get(actorhub.get_actor("orders", namespace="shop").incr.remote()) == 3


def test_concurrent_get_or_create_from_several_processes_makes_one_actor(cluster: actorhub.ClusterContext) -> None:
    body = (
        COUNTER
        + """
import threading
actorhub.init(address="auto", namespace="race")
ids = []
def go():
    h = Counter.options(name="single", get_if_exists=True, lifetime="detached").remote()
    ids.append(h.actor_id)
threads = [threading.Thread(target=go) for _ in range(10)]
[t.start() for t in threads]
[t.join() for t in threads]
print(" ".join(ids))
"""
    )
    procs = [
        subprocess.Popen(driver_script(body), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    ids: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        ids.extend(out.split())
    assert len(ids) == 50
    assert len(set(ids)) == 1
    handle = actorhub.get_actor("single", namespace="race")
    assert handle.actor_id == ids[0]
    assert actorhub.get(handle.incr.remote()) == 1  # the constructor ran once
    assert [a for a in actorhub.util.list_named_actors(all_namespaces=True) if a["name"] == "single"] == [
        {"name": "single", "namespace": "race"}
    ]


def test_non_detached_actor_dies_with_sigkilled_driver_and_frees_its_name(
    cluster: actorhub.ClusterContext,
) -> None:
    body = (
        COUNTER
        + """
import sys, time
actorhub.init(address="auto", namespace="jobs")
owned = Counter.options(name="owned").remote()
kept = Counter.options(name="kept", lifetime="detached").remote()
print(actorhub.get(owned.pid.remote()), actorhub.get(kept.pid.remote()), flush=True)
time.sleep(600)
"""
    )
    proc = subprocess.Popen(driver_script(body), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    owned_pid, kept_pid = map(int, proc.stdout.readline().split())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive(owned_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(owned_pid), "the non-detached actor outlived its SIGKILLed driver"
    assert _alive(kept_pid)

    def names() -> list[str]:
        return [a["name"] for a in actorhub.util.list_named_actors(all_namespaces=True)]

    # the hub frees the name once it has seen the process go, a moment after it went
    while "owned" in names() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "owned" not in names() and "kept" in names()
    # the freed name can be taken again
    again = Named.options(name="owned", namespace="jobs").remote("new")
    assert actorhub.get(again.get_tag.remote()) == "new"
    kept = actorhub.get_actor("kept", namespace="jobs")
    actorhub.kill(kept)
    assert not _alive(kept_pid)


def test_detached_actor_outlives_its_creator_until_kill(cluster: actorhub.ClusterContext) -> None:
    run_driver(
        COUNTER
        + """
actorhub.init(address="auto", namespace="svc")
Counter.options(name="daemon", lifetime="detached").remote()
"""
    )
    handle = actorhub.get_actor("daemon", namespace="svc")
    pid = actorhub.get(handle.pid.remote())
    actorhub.kill(handle)
    assert not _alive(pid), "kill() returned before the process was gone"
    with pytest.raises(ActorDiedError, match=r"kill\(\)"):
        actorhub.get(handle.incr.remote())
    with pytest.raises(ValueError):
        actorhub.get_actor("daemon", namespace="svc")


def test_handle_pickled_into_another_application_reaches_same_actor(cluster: actorhub.ClusterContext) -> None:
    import cloudpickle

    a = Named.options(lifetime="detached").remote("shared")
    blob = cloudpickle.dumps(a).hex()
    out = run_driver(
        f"""
        import cloudpickle, actorhub
        actorhub.init(address="auto")
        h = cloudpickle.loads(bytes.fromhex("{blob}"))
        print(actorhub.get(h.get_tag.remote()))
        """
    )
    assert out.stdout.strip() == "shared"
    actorhub.kill(a)


def test_init_options_and_reinit(cluster: actorhub.ClusterContext) -> None:
    with pytest.raises(RuntimeError):
        actorhub.init()
    assert actorhub.init(ignore_reinit_error=True) == cluster
    assert actorhub.is_initialized()


def test_shutdown_leaves_no_process_and_init_again_works(session_root: object) -> None:
    actorhub.init(num_cpus=1, logging_level="INFO", include_dashboard=False)
    a = Named.remote("x")
    pid = actorhub.get(a.pid.remote())
    actorhub.shutdown()
    assert not _alive(pid)
    assert not actorhub.is_initialized()
    actorhub.init(namespace="again")
    try:
        assert actorhub.get_runtime_context().namespace == "again"
    finally:
        actorhub.shutdown()


def test_sigkilled_owner_driver_takes_its_cluster_down(session_root: object) -> None:
    body = """
import actorhub, time
actorhub.init()
print("up", flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", body], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "up"
    proc.kill()
    proc.wait()
    # the autouse leak check fails this test if the hub, node or workers survive
