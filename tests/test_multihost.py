"""A cluster across simulated hosts (tests/_hosts.py: network namespaces on one bridge, each
with its own /dev/shm, hostname, TMPDIR and HOME): nothing is shared but the network.

The module's cluster: the head on h1 (`actorhub start --head --port P --node-ip-address IP`),
nodes on h2 and h3 joining with the hub's address and ACTORHUB_TOKEN, and h4 with no node,
only drivers. The node-death and TLS tests bring hosts of their own and remove them.
Every check runs in driver programs on the hosts; the test process is outside every host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _certs import issue, make_ca
from _hosts import CLI, Host, HostCluster, Network, NodeInfo, cli_has, new_token, unavailable_reason

_reason = unavailable_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"no simulated hosts: {_reason}")

PORT = 6379
# A store per node well below each host's tmpfs (4 GiB): enough for the arrays below.
STORE_ENV = {"ACTORHUB_OBJECT_STORE_MEMORY": str(1 << 30)}
MIB = 1 << 20


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with Network(tmp_path_factory.mktemp("hosts")) as network:
        yield network


@pytest.fixture(scope="module")
def hosts(net: Network) -> list[Host]:
    """h1 (head), h2 and h3 (nodes), h4 (drivers only, no node)."""
    return [net.add_host() for _ in range(4)]


@pytest.fixture(scope="module")
def multihost(hosts: list[Host], allowed_process_roots: set[int]) -> Iterator[HostCluster]:
    cluster = HostCluster(head=hosts[0], port=PORT, token=new_token(), num_cpus=1, extra_env=STORE_ENV)
    roots: set[int] = set()
    try:
        cluster.start_head()
        cluster.wait_for_head()
        for host in hosts[1:3]:
            cluster.join(host)
        cluster.wait_for_nodes(3)
        # Workers the nodes fork during the tests descend from these; they are not leaks.
        roots = {pid for host in hosts for pid in host.pids()}
        allowed_process_roots.update(roots)
        yield cluster
    finally:
        allowed_process_roots.difference_update(roots)
        for host in hosts:
            host.kill_all()


def _alive(cluster: HostCluster, host: Host | None = None) -> list[NodeInfo]:
    return [n for n in cluster.nodes(host) if n.alive]


def _node_on(cluster: HostCluster, host: Host) -> NodeInfo:
    found = [n for n in _alive(cluster) if n.ip == host.ip]
    assert len(found) == 1, f"one node on {host.name} ({host.ip}) expected: {found}"
    return found[0]


def test_nodes_on_three_hosts_join_with_the_address_and_the_token_alone(
    multihost: HostCluster, hosts: list[Host]
) -> None:
    nodes = _alive(multihost, hosts[3])  # asked from the host without a node
    assert sorted(n.ip for n in nodes) == sorted(h.ip for h in hosts[:3]), nodes
    for node in nodes:
        assert multihost.host_of(node, hosts).runs(node.pid), f"node {node.node_id} is not on its host"
    # The head tells a newcomer how to join and where drivers connect.
    shown = hosts[0].log_of("head", 200)
    assert f"--address {multihost.address}" in shown and "0.0.0.0" not in shown, shown
    # `actorhub status` works from any host, with the address and the token.
    out = hosts[3].run([*CLI, "status", "--address", multihost.address], env=multihost.env(hosts[3]))
    assert out.returncode == 0, out.stderr
    assert all(h.ip in out.stdout for h in hosts[:3]), out.stdout
    # Without the token the hub refuses.
    refused = hosts[3].run([*CLI, "status", "--address", multihost.address],
                           env={"ACTORHUB_TOKEN": "0" * 64, "ACTORHUB_CONNECT_TIMEOUT_S": "5"})
    assert refused.returncode != 0, refused.stdout


_WHERE = """
import socket
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On


def here():
    return dict(node=actorhub.get_runtime_context().get_node_id(), pid=os.getpid(), host=socket.gethostname(),
                netns=os.stat("/proc/self/ns/net").st_ino)
"""


def test_actors_and_tasks_run_on_every_host(multihost: HostCluster, hosts: list[Host]) -> None:
    nodes = _alive(multihost)
    placed = multihost.driver(hosts[1], _WHERE + """
actorhub.init(address=ADDRESS)


@actorhub.remote
class Where:
    def where(self):
        return here()


@actorhub.remote
def where():
    return here()


out = {"driver": here(), "nodes": {}}
for node in PARAMS:
    actor = Where.options(scheduling_strategy=On(node)).remote()
    task = where.options(scheduling_strategy=On(node))
    out["nodes"][node] = dict(
        actor=actorhub.get(actor.where.remote(), timeout=60),
        tasks=actorhub.get([task.remote() for _ in range(3)], timeout=60),
    )
    actorhub.kill(actor)
report(out)
""", params=[n.node_id for n in nodes])
    assert placed["driver"]["host"] == hosts[1].name
    for node in nodes:
        host = multihost.host_of(node, hosts)
        ran = placed["nodes"][node.node_id]
        for where in [ran["actor"], *ran["tasks"]]:
            assert where["node"] == node.node_id, where
            assert (where["host"], where["netns"]) == (host.name, host.netns_inode()), where


_PARAMETER_SERVER = _WHERE + """
import numpy as np

actorhub.init(address=ADDRESS)
SIZE, ROUNDS = PARAMS["size"], PARAMS["rounds"]


@actorhub.remote
class Shard:
    def __init__(self):
        self.params = np.zeros(SIZE)
        self.mapped = []

    def where(self):
        return here()

    def get(self):
        return self.params

    def apply(self, *grads):
        for grad in grads:
            self.params += grad
        # Arguments from the store are read-only mappings of this node's copy.
        self.mapped.append(all(not g.flags.writeable for g in grads))
        return len(self.mapped)

    def was_mapped(self):
        return self.mapped


@actorhub.remote
class Worker:
    def where(self):
        return here()

    def gradient(self, index, applied, params):
        # Every update of the rounds before reached the shard this copy came from.
        assert params.shape == (SIZE,) and (params == applied).all(), (params[:3], applied)
        return np.full(SIZE, float(index + 1))


nodes = PARAMS["nodes"]
shards = [Shard.options(scheduling_strategy=On(n)).remote() for n in nodes]
# Worker w sits on the node after shard w's: each reads two of three shards across hosts.
workers = [Worker.options(scheduling_strategy=On(nodes[(w + 1) % len(nodes)])).remote() for w in range(len(nodes))]
per_round = sum(w + 1 for w in range(len(workers)))
for r in range(ROUNDS):
    params = [s.get.remote() for s in shards]
    grads = [[w.gradient.remote(i, r * per_round, p) for p in params] for i, w in enumerate(workers)]
    actorhub.get([s.apply.remote(*[g[k] for g in grads]) for k, s in enumerate(shards)], timeout=120)
final = actorhub.get([s.get.remote() for s in shards], timeout=120)
report(dict(
    shards=actorhub.get([s.where.remote() for s in shards]),
    workers=actorhub.get([w.where.remote() for w in workers]),
    values=[sorted({float(v) for v in np.unique(a)}) for a in final],
    nbytes=[int(a.nbytes) for a in final],
    mapped=actorhub.get([s.was_mapped.remote() for s in shards]),
))
for actor in shards + workers:
    actorhub.kill(actor)
"""


def test_a_parameter_server_with_shards_on_three_hosts(multihost: HostCluster, hosts: list[Host]) -> None:
    nodes = _alive(multihost)
    size, rounds = 512 * 1024, 3  # 4 MiB of float64 per shard: through the object stores
    out = multihost.driver(hosts[0], _PARAMETER_SERVER, params=dict(
        nodes=[n.node_id for n in nodes], size=size, rounds=rounds), timeout=180)
    assert {s["host"] for s in out["shards"]} == {h.name for h in hosts[:3]}, out["shards"]
    assert {w["host"] for w in out["workers"]} == {h.name for h in hosts[:3]}, out["workers"]
    expected = float(rounds * (1 + 2 + 3))
    assert out["values"] == [[expected]] * 3, out["values"]
    assert out["nbytes"] == [size * 8] * 3
    assert out["mapped"] == [[True] * rounds] * 3, "gradients did not come through the stores"


_CREATE_CATALOG = _WHERE + """
actorhub.init(address=ADDRESS, namespace="catalog-ns")


@actorhub.remote
class Catalog:
    def __init__(self):
        self.items = {}

    def add(self, key, value):
        self.items[key] = value
        return len(self.items)

    def lookup(self, key):
        return self.items.get(key), here()


catalog = Catalog.options(name="catalog", lifetime="detached", scheduling_strategy=On(PARAMS)).remote()
actorhub.get(catalog.add.remote("written-by", here()["host"]))
report(actorhub.get(catalog.lookup.remote("written-by"))[1])
"""

_FIND_CATALOG = _WHERE + """
actorhub.init(address=ADDRESS, namespace="elsewhere")
try:
    actorhub.get_actor("catalog")  # not in this job's namespace
    sys.exit("get_actor found an actor of another namespace")
except ValueError:
    pass
catalog = actorhub.get_actor("catalog", namespace="catalog-ns")
value, where = actorhub.get(catalog.lookup.remote("written-by"))
from actorhub.util import list_named_actors
names = list_named_actors(all_namespaces=True)
actorhub.kill(catalog)
report(dict(value=value, actor=where, driver=here(), names=names))
"""


def test_a_driver_on_a_host_without_a_node_finds_a_named_actor_by_namespace(
    multihost: HostCluster, hosts: list[Host]
) -> None:
    on_h3 = _node_on(multihost, hosts[2])
    made = multihost.driver(hosts[1], _CREATE_CATALOG, params=on_h3.node_id)
    assert made["host"] == hosts[2].name
    found = multihost.driver(hosts[3], _FIND_CATALOG)
    assert found["value"] == hosts[1].name, "the actor was written by the driver on h2"
    assert found["actor"]["host"] == hosts[2].name and found["driver"]["host"] == hosts[3].name
    assert {"name": "catalog", "namespace": "catalog-ns"} in found["names"], found["names"]
    assert hosts[3].ip not in {n.ip for n in _alive(multihost)}, "h4 must have no node"


_LARGE_FROM_NOWHERE = _WHERE + """
import numpy as np

actorhub.init(address=ADDRESS)


@actorhub.remote
class Mirror:
    def summary(self, array):
        return int(array.sum()), int(array.nbytes), here()["host"]

    def make(self, n):
        return np.arange(n, dtype=np.int64)


mirror = Mirror.options(scheduling_strategy=On(PARAMS["node"])).remote()
n = PARAMS["items"]
sent = actorhub.put(np.arange(n, dtype=np.int64))
summary = actorhub.get(mirror.summary.remote(sent), timeout=60)
back = actorhub.get(mirror.make.remote(n), timeout=60)
inline = actorhub.get(mirror.summary.remote(np.ones(n, dtype=np.int64)), timeout=60)
report(dict(summary=summary, back=[int(back.sum()), int(back.nbytes)], inline=inline))
actorhub.kill(mirror)
"""


def test_large_values_go_to_and_from_a_driver_on_a_host_without_a_node(
    multihost: HostCluster, hosts: list[Host]
) -> None:
    items = 2 * MIB  # 16 MiB of int64: two chunks
    total = items * (items - 1) // 2
    out = multihost.driver(hosts[3], _LARGE_FROM_NOWHERE, params=dict(
        node=_node_on(multihost, hosts[1]).node_id, items=items))
    assert out["summary"] == [total, items * 8, hosts[1].name]
    assert out["back"] == [total, items * 8]
    assert out["inline"] == [items, items * 8, hosts[1].name]


_NODE_DEATH = _WHERE + """
import signal
import numpy as np
from actorhub.exceptions import ObjectLostError
from actorhub.runtime.runtime import current

actorhub.init(address=ADDRESS)
rt = current()
victim = next(n for n in rt.hub.cluster_status().nodes if n.alive and n.address.rpartition(":")[0] == PARAMS)


@actorhub.remote
class Tracker:
    def __init__(self):
        self.starts = []

    def started(self, node):
        self.starts.append(node)

    def seen(self):
        return list(self.starts)


@actorhub.remote
def work(tracker):
    tracker.started.remote(actorhub.get_runtime_context().get_node_id())
    time.sleep(4)
    return actorhub.get_runtime_context().get_node_id()


@actorhub.remote(max_restarts=2, max_task_retries=2)
class Survivor:
    def where(self):
        return here()

    def slow(self, seconds):
        time.sleep(seconds)
        return here()["node"]


@actorhub.remote
class Holder:
    def make(self):
        return np.full(1 << 20, 7, dtype=np.int64)  # 8 MiB: kept in the node's store


tracker = Tracker.options(scheduling_strategy=On(rt.node_id)).remote()
# On the new node, by preference only: once it is gone they restart elsewhere (soft affinity).
survivors = []
for _ in range(2):
    actor = Survivor.options(scheduling_strategy=On(victim.node_id, soft=True)).remote()
    survivors.append((actor, actorhub.get(actor.where.remote(), timeout=60)))
assert all(before["node"] == victim.node_id for _, before in survivors), "an actor was not placed on the new node"
holder = Holder.options(scheduling_strategy=On(victim.node_id)).remote()
lost = holder.make.remote()
# fetch_local=False: the only copy stays on the node about to die (wait would copy it here).
ready, _ = actorhub.wait([lost], timeout=60, fetch_local=False)
assert ready, "the holder's result never came"

# Load: tasks on every node (one CPU each) and calls in flight on the survivors.
tasks = [work.remote(tracker) for _ in range(8)]
calls = [actor.slow.remote(3) for actor, _ in survivors]
deadline = time.monotonic() + 60
while victim.node_id not in actorhub.get(tracker.seen.remote()):
    assert time.monotonic() < deadline, "no task started on the node to kill"
    time.sleep(0.1)
# Its group holds the agent and its zygote; workers follow by PDEATHSIG.
assert os.getpgid(victim.pid) == victim.pid, "the node agent does not lead its process group"
os.killpg(victim.pid, signal.SIGKILL)
killed_at = time.monotonic()

task_nodes = actorhub.get(tasks, timeout=120)
call_nodes = actorhub.get(calls, timeout=120)
after = [actorhub.get(actor.where.remote(), timeout=60) for actor, _ in survivors]
try:
    actorhub.get(lost, timeout=60)
    lost_error = None
except ObjectLostError as err:
    lost_error = [type(err).__name__, str(err)]
report(dict(
    victim=victim.node_id,
    started_on=actorhub.get(tracker.seen.remote()),
    task_nodes=task_nodes,
    call_nodes=call_nodes,
    before=[b for _, b in survivors],
    after=after,
    lost_error=lost_error,
    recovered_s=time.monotonic() - killed_at,
    alive=[n.node_id for n in rt.hub.cluster_status().nodes if n.alive],
))
for actor, _ in survivors:
    actorhub.kill(actor)
actorhub.kill(tracker)
"""


@pytest.mark.timeout(300)
def test_a_node_agent_killed_under_load(net: Network, multihost: HostCluster, hosts: list[Host]) -> None:
    """SIGKILL of a node agent's process group on its own host: restartable actors come back on
    other hosts, tasks are retried, and an object whose only copy was there is lost."""
    h5 = net.add_host()
    try:
        multihost.join(h5)
        multihost.wait_for_nodes(4)
        multihost.forget(h5)  # its `actorhub start --block` may end with its node
        out = multihost.driver(hosts[0], _NODE_DEATH, params=h5.ip, timeout=240)
    finally:
        net.remove_host(h5)
    victim = out["victim"]
    assert victim in out["started_on"], "the load never reached the node"
    assert victim not in out["task_nodes"] and len(out["task_nodes"]) == 8, out["task_nodes"]
    assert victim not in out["call_nodes"], out["call_nodes"]
    for before, after in zip(out["before"], out["after"], strict=True):
        assert before["node"] == victim and after["node"] != victim and after["pid"] != before["pid"], (before, after)
        assert after["host"] in {h.name for h in hosts[:3]}
    assert out["lost_error"] is not None, "get() of an object whose only copy was on the dead node returned"
    assert victim not in out["alive"]


# -- TLS ----------------------------------------------------------------------------------------


_TLS_JOB = _WHERE + """
import numpy as np

actorhub.init(address=ADDRESS)


@actorhub.remote
class Echo:
    def make(self, n):
        return np.arange(n, dtype=np.int64)

    def total(self, array):
        return int(array.sum()), here()["host"]


MIB = 1 << 20
nodes = PARAMS
actors = [Echo.options(scheduling_strategy=On(n)).remote() for n in nodes]
made = actors[-1].make.remote(MIB)
report(dict(
    totals=actorhub.get([a.total.remote(made) for a in actors], timeout=60),
    here=int(actorhub.get(made, timeout=60).sum()),
))
"""

_PLAIN_CLIENT = """
actorhub.init(address=ADDRESS)
print(actorhub.get(actorhub.put(1)))
"""


@pytest.mark.timeout(300)
def test_tls_across_hosts_refuses_plain_clients_and_other_cas(net: Network, tmp_path: Path) -> None:
    if not cli_has("--tls-cert"):
        pytest.fail("`actorhub start` has no --tls-cert: TLS across hosts (issue 10, item 3) is missing")
    tls_hosts = [net.add_host(f"tls{i}") for i in range(1, 4)]
    try:
        ca = make_ca("actorhub test CA")
        env = {h.name: issue(ca, h.name, h.ip, tmp_path / h.name) for h in tls_hosts}
        flags = {name: ("--tls-cert", e["ACTORHUB_TLS_CERT"], "--tls-key", e["ACTORHUB_TLS_KEY"],
                        "--tls-ca", e["ACTORHUB_TLS_CA"]) for name, e in env.items()}
        cluster = HostCluster(head=tls_hosts[0], port=PORT + 1, token=new_token(), num_cpus=1, extra_env=STORE_ENV,
                              per_host_args=flags, per_host_env=env)
        cluster.start_head()
        cluster.wait_for_head()
        for host in tls_hosts[1:]:
            cluster.join(host)
        nodes = cluster.wait_for_nodes(3)
        assert sorted(n.ip for n in nodes) == sorted(h.ip for h in tls_hosts)
        # Actors on every host, and a large result pulled between their stores, over TLS.
        out = cluster.driver(tls_hosts[0], _TLS_JOB, params=[n.node_id for n in nodes])
        total = MIB * (MIB - 1) // 2
        assert sorted(out["totals"]) == sorted([total, h.name] for h in tls_hosts), out
        assert out["here"] == total
        # The token is right, but no certificate: refused.
        quick = {"ACTORHUB_CONNECT_TIMEOUT_S": "5", "ACTORHUB_HUB_RECONNECT_TIMEOUT_S": "3"}
        plain = {"ACTORHUB_TLS_CERT": "", "ACTORHUB_TLS_KEY": "", "ACTORHUB_TLS_CA": "", **quick}
        err = cluster.driver(tls_hosts[2], _PLAIN_CLIENT, env=plain, timeout=60, expect_failure=True)
        assert f"TlsMismatchError: cannot talk to {cluster.address}: it serves TLS" in err, err
        # A certificate from another CA: refused as well.
        other = issue(make_ca("another CA"), tls_hosts[2].name, tls_hosts[2].ip, tmp_path / "other")
        err = cluster.driver(tls_hosts[2], _PLAIN_CLIENT, env={**other, **quick}, timeout=60, expect_failure=True)
        assert f"TlsMismatchError: cannot talk to {cluster.address}: its certificate does not verify" in err, err
    finally:
        for host in tls_hosts:
            net.remove_host(host)
