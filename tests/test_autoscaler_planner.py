"""The autoscaler's decisions without processes: the cluster YAML, the plan for a demand on a
fake clock, the hub's demand board, the submitter's backlog report and request_resources' checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _fake_clock import FakeClock

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.autoscaler.config import ClusterConfig, load_cluster_config, parse_cluster_config
from actorhub.autoscaler.planner import REGISTER_TIMEOUT_S, Planner, WorkerNode
from actorhub.autoscaler.sdk import _bundles
from actorhub.autoscaler.task_demand import TaskDemandReporter, backlog_demands
from actorhub.config import ConfigError
from actorhub.exceptions import OptionsError
from actorhub.hub.autoscaler_demand import REPORT_TTL_S, DemandBoard, actor_demands, node_loads
from actorhub.hub.records import ActorRecord, NodeRecord
from actorhub.namespaces.rules import SYSTEM_NAMESPACE
from actorhub.tasks.options import TaskOptions
from actorhub.tasks.submit_state import SubmitState, Task
from actorhub.wire.autoscaler import AutoscalerView, Demand, GroupDemand, NodeLoad

HEAD = NodeLoad("head", "127.0.0.1:1", {"CPU": 1.0}, {"CPU": 1.0})
BUSY_HEAD = NodeLoad("head", "127.0.0.1:1", {"CPU": 1.0}, {"CPU": 0.0}, lent_cpus=1.0)


def config(**more: Any) -> ClusterConfig:
    data: dict[str, Any] = {
        "cluster_name": "t", "max_workers": 2, "idle_timeout_minutes": 0.1, "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 1}, "max_workers": 0},
            "worker": {"resources": {"CPU": 2}, "min_workers": 0, "max_workers": 2},
        },
    }
    data.update(more)
    return parse_cluster_config(data, "test.yaml")


def demand(count: int, **resources: float) -> Demand:
    return Demand(resources or {"CPU": 1.0}, count)


def idle_worker(node_id: str, cpus: float = 2.0, node_type: str = "worker", **more: Any) -> WorkerNode:
    load = NodeLoad(node_id, "127.0.0.1:2", {"CPU": cpus}, {"CPU": cpus})
    return WorkerNode(node_id, node_type, load, launched_at=0.0, **more)


def busy_worker(node_id: str) -> WorkerNode:
    load = NodeLoad(node_id, "127.0.0.1:2", {"CPU": 2.0}, {"CPU": 0.0}, lent_cpus=2.0)
    return WorkerNode(node_id, "worker", load, launched_at=0.0)


# -- the cluster YAML ---------------------------------------------------------------------------------

def test_a_config_parses_with_rays_fields() -> None:
    parsed = config(upscaling_speed=2, provider={"type": "local"})
    assert parsed.idle_timeout_s == pytest.approx(6.0)
    assert parsed.max_of("worker") == 2 and parsed.max_of("head") == 0
    assert parsed.available_node_types["worker"].vector() == {"CPU": 2.0}


@pytest.mark.parametrize(("change", "named"), [
    ({"max_workers": -1}, "max_workers"),
    ({"idle_timeout_minutes": "soon"}, "idle_timeout_minutes"),
    ({"head_node_type": "boss"}, "head_node_type 'boss'"),
    ({"setup_commands": ["pip install x"]}, "setup_commands"),
    ({"provider": {"type": "aws"}}, "provider.type"),
    ({"available_node_types": {"head": {"resources": {"CPU": -2}}}}, "available_node_types.head.resources"),
    ({"available_node_types": {"head": {"resources": {"GPU": 0.5}}}}, "GPU must be a whole number"),
    ({"available_node_types": {"head": {"min_workers": 3, "max_workers": 1}}}, "min_workers (3)"),
    ({"available_node_types": {"head": {"node_config": {"InstanceType": "m5"}}}},
     "available_node_types.head.node_config.InstanceType"),
    ({"available_node_types": {}}, "available_node_types"),
])
def test_a_bad_config_is_refused_naming_the_field(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=r"test\.yaml") as info:
        config(**change)
    assert named in str(info.value)


def test_a_bad_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_cluster_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("cluster_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cluster_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_cluster_config(listing)


# -- scaling up ---------------------------------------------------------------------------------------

def test_waiting_tasks_launch_as_few_nodes_as_fit_them() -> None:
    planner = Planner(config(), FakeClock().now)
    plan = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(3),)), [])
    assert plan.launch == {"worker": 2}  # 3 CPUs of work, 2-CPU workers
    assert not plan.infeasible and not plan.waiting


def test_free_room_and_starting_nodes_count_before_new_ones() -> None:
    planner = Planner(config(), FakeClock().now)
    assert planner.plan(AutoscalerView(nodes=(HEAD,), task_demand=(demand(1),)), []).launch == {}
    starting = WorkerNode("w1", "worker", None, launched_at=0.0)
    plan = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(2),)), [starting])
    assert plan.launch == {}


def test_max_workers_bounds_the_launches_and_the_rest_waits() -> None:
    planner = Planner(config(), FakeClock().now)
    plan = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(10),)), [])
    assert plan.launch == {"worker": 2}
    assert plan.waiting == [{"CPU": 1.0}]
    full = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(10),)),
                        [busy_worker("a"), busy_worker("b")])
    assert full.launch == {}


def test_the_clusters_max_workers_bounds_every_type_together() -> None:
    types = {"head": {"resources": {"CPU": 1}, "max_workers": 0},
             "small": {"resources": {"CPU": 1}}, "big": {"resources": {"CPU": 4}}}
    planner = Planner(config(max_workers=3, available_node_types=types), FakeClock().now)
    plan = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(20),)), [])
    assert sum(plan.launch.values()) == 3
    assert plan.launch == {"big": 3}  # each big node takes the most of what waits


def test_demand_no_node_type_fits_is_infeasible_and_never_launched_for() -> None:
    planner = Planner(config(), FakeClock().now)
    view = AutoscalerView(nodes=(HEAD,), task_demand=(demand(2, CPU=1.0, GPU=1.0),),
                          actor_demand=(demand(1, CPU=8.0),))
    for _ in range(3):
        plan = planner.plan(view, [])
        assert plan.launch == {}
        assert sorted(plan.infeasible, key=str) == sorted([{"CPU": 1.0, "GPU": 1.0}, {"CPU": 8.0}], key=str)


def test_an_actor_that_needs_more_than_the_head_brings_a_worker() -> None:
    planner = Planner(config(), FakeClock().now)
    plan = planner.plan(AutoscalerView(nodes=(HEAD,), actor_demand=(demand(1, CPU=2.0),)), [])
    assert plan.launch == {"worker": 1}


def test_gpu_nodes_are_kept_for_gpu_work() -> None:
    types = {"head": {"resources": {"CPU": 1}, "max_workers": 0},
             "cpu": {"resources": {"CPU": 2}}, "gpu": {"resources": {"CPU": 8, "GPU": 1}}}
    planner = Planner(config(max_workers=4, available_node_types=types), FakeClock().now)
    assert planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(2),)), []).launch == {"cpu": 1}
    gpu = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(1, CPU=1.0, GPU=1.0),)), [])
    assert gpu.launch == {"gpu": 1}


def test_min_workers_run_without_demand_and_are_never_idled_out() -> None:
    clock = FakeClock()
    types = {"head": {"resources": {"CPU": 1}, "max_workers": 0},
             "worker": {"resources": {"CPU": 2}, "min_workers": 1, "max_workers": 2}}
    planner = Planner(config(available_node_types=types), clock.now)
    assert planner.plan(AutoscalerView(nodes=(HEAD,)), []).launch == {"worker": 1}
    planner.plan(AutoscalerView(nodes=(HEAD,)), [idle_worker("w1")])
    clock.advance(3600)
    assert planner.plan(AutoscalerView(nodes=(HEAD,)), [idle_worker("w1")]).terminate == []


def test_launches_at_once_are_bounded_by_the_upscaling_speed() -> None:
    types = {"head": {"resources": {"CPU": 1}, "max_workers": 0}, "worker": {"resources": {"CPU": 1}}}
    planner = Planner(config(max_workers=50, available_node_types=types), FakeClock().now)
    plan = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(40),)), [])
    assert plan.launch == {"worker": 5}  # max(5, 1.0 x 1 node)
    starting = [WorkerNode(f"s{i}", "worker", None, 0.0) for i in range(5)]
    assert planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(40),)), starting).launch == {}


# -- placement groups (packed all or none, by strategy) -----------------------------------------

def test_strict_spread_bundles_need_a_node_each_and_strict_pack_one_node() -> None:
    planner = Planner(config(max_workers=4, available_node_types={
        "head": {"resources": {"CPU": 1}, "max_workers": 0}, "worker": {"resources": {"CPU": 2}},
        "big": {"resources": {"CPU": 4}, "max_workers": 1}}), FakeClock().now)
    spread = GroupDemand(({"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}), "STRICT_SPREAD")
    assert planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), placement_groups=(spread,)), []).launch == {"worker": 3}
    pack = GroupDemand(({"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}), "STRICT_PACK")
    assert planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), placement_groups=(pack,)), []).launch == {"big": 1}
    too_big = GroupDemand(({"CPU": 3.0}, {"CPU": 3.0}), "STRICT_PACK")
    plan = planner.plan(AutoscalerView(nodes=(BUSY_HEAD,), placement_groups=(too_big,)), [])
    assert plan.launch == {} and plan.infeasible == [{"CPU": 6.0}]


# -- request_resources ------------------------------------------------------------------------------

def test_request_resources_counts_totals_and_keeps_its_nodes() -> None:
    clock = FakeClock()
    planner = Planner(config(), clock.now)
    request = (demand(4),)
    assert planner.plan(AutoscalerView(nodes=(HEAD,), requested=request), []).launch == {"worker": 2}
    workers = [idle_worker("w1"), idle_worker("w2")]
    view = AutoscalerView(nodes=(HEAD,), requested=request)
    assert planner.plan(view, workers).launch == {}  # 1 + 2 + 2 CPUs in all, free or not
    clock.advance(60)
    assert planner.plan(view, workers).terminate == []  # idle, but requested
    withdrawn = planner.plan(AutoscalerView(nodes=(HEAD,)), workers)
    assert sorted(node for node, _ in withdrawn.terminate) == ["w1", "w2"]


# -- scaling down -------------------------------------------------------------------------------------

def test_an_idle_worker_is_stopped_after_the_timeout_and_work_resets_it() -> None:
    clock = FakeClock()
    planner = Planner(config(), clock.now)  # 6 s
    view = AutoscalerView(nodes=(HEAD,))
    assert planner.plan(view, [idle_worker("w1")]).terminate == []
    clock.advance(5)
    assert planner.plan(view, [busy_worker("w1")]).terminate == []  # busy: the clock starts again
    clock.advance(1)
    assert planner.plan(view, [idle_worker("w1")]).terminate == []
    clock.advance(5.9)
    assert planner.plan(view, [idle_worker("w1")]).terminate == []
    clock.advance(0.2)
    [(node, why)] = planner.plan(view, [idle_worker("w1")]).terminate
    assert node == "w1" and "idle for 6.1 s" in why


@pytest.mark.parametrize("keep", [
    {"holds_objects": True},
    {"load": NodeLoad("w1", "a", {"CPU": 2.0}, {"CPU": 2.0}, actors=1)},  # a 0-CPU actor
    {"load": NodeLoad("w1", "a", {"CPU": 2.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 0.0})},
])
def test_a_node_in_use_is_not_idle(keep: dict[str, Any]) -> None:
    clock = FakeClock()
    planner = Planner(config(), clock.now)
    worker = WorkerNode(**{"node_id": "w1", "node_type": "worker", "load": idle_worker("w1").load,
                           "launched_at": 0.0, **keep})
    planner.plan(AutoscalerView(nodes=(HEAD,)), [worker])
    clock.advance(600)
    assert planner.plan(AutoscalerView(nodes=(HEAD,)), [worker]).terminate == []


def test_an_idle_node_that_waiting_work_fits_is_kept() -> None:
    clock = FakeClock()
    planner = Planner(config(), clock.now)
    planner.plan(AutoscalerView(nodes=(BUSY_HEAD,)), [idle_worker("w1")])
    clock.advance(60)
    view = AutoscalerView(nodes=(BUSY_HEAD,), task_demand=(demand(1),))
    plan = planner.plan(view, [idle_worker("w1")])
    assert plan.terminate == [] and plan.launch == {}


def test_a_node_that_never_registers_is_stopped() -> None:
    clock = FakeClock()
    planner = Planner(config(), clock.now)
    starting = WorkerNode("w1", "worker", None, launched_at=clock.now())
    assert planner.plan(AutoscalerView(nodes=(HEAD,)), [starting]).terminate == []
    clock.advance(REGISTER_TIMEOUT_S + 1)
    [(node, why)] = planner.plan(AutoscalerView(nodes=(HEAD,)), [starting]).terminate
    assert node == "w1" and "has not listed it" in why


def test_nodes_being_stopped_lend_no_room() -> None:
    planner = Planner(config(), FakeClock().now)
    leaving = NodeLoad("gone", "a", {"CPU": 2.0}, {"CPU": 2.0})
    view = AutoscalerView(nodes=(BUSY_HEAD, leaving), task_demand=(demand(1),))
    assert planner.plan(view, []).launch == {}
    assert planner.plan(view, [], ignore={"gone"}).launch == {"worker": 1}


# -- the hub's board, the submitter's report ----------------------------------------------------------

def shape(count: int, **resources: float) -> hub_pb2.AutoscalerShape:
    return hub_pb2.AutoscalerShape(resources=resources, count=count)


def test_reports_replace_each_other_add_up_and_lapse() -> None:
    clock = FakeClock()
    board = DemandBoard(clock.now)
    board.report("a", [shape(2, CPU=1.0)])
    board.report("a", [shape(3, CPU=1.0)])  # replaces a's last
    board.report("b", [shape(1, CPU=1.0), shape(1, CPU=1.0, GPU=1.0)])
    assert board.task_demand() == {(("CPU", 1.0),): 4, (("CPU", 1.0), ("GPU", 1.0)): 1}
    board.report("b", [])
    assert board.task_demand() == {(("CPU", 1.0),): 3}
    clock.advance(REPORT_TTL_S + 0.1)  # a died without an empty report
    assert board.task_demand() == {}
    board.request([shape(4, CPU=1.0)])
    board.request([])
    assert board.requested == {}


def test_the_hub_counts_loads_and_the_pending_actors_a_new_node_could_take() -> None:
    node = NodeRecord("n1", "a:1", 4.0, 2.0, pid=1, order=1, generation=1, lent_cpus=1.0,
                      resources={"GPU": 1.0}, available={"GPU": 0.0})
    gone = NodeRecord("n2", "a:2", 4.0, 4.0, pid=2, order=2, generation=1, alive=False)
    user = ActorRecord(spec=common_pb2.ActorSpec(actor_id="u", namespace="ns"), reserved_on="n1")
    system = ActorRecord(spec=common_pb2.ActorSpec(actor_id="s", namespace=SYSTEM_NAMESPACE), reserved_on="n1")
    [load] = node_loads([node, gone], [user, system])
    assert dict(load.total) == {"CPU": 4.0, "GPU": 1.0}
    assert dict(load.available) == {"CPU": 1.0, "GPU": 0.0}  # actors hold 2 CPUs, tasks were lent 1
    assert load.actors == 1  # actorhub's own are left out
    pending = [
        ActorRecord(spec=common_pb2.ActorSpec(actor_id="p", namespace="ns", placement_cpus=1.0, resources={"GPU": 1})),
        ActorRecord(spec=common_pb2.ActorSpec(actor_id="q", namespace="ns", num_cpus=2.0)),
        ActorRecord(spec=common_pb2.ActorSpec(actor_id="r", namespace="ns", num_cpus=2.0, node_id="n1")),
        ActorRecord(spec=common_pb2.ActorSpec(actor_id="s", namespace=SYSTEM_NAMESPACE, num_cpus=1.0)),
        ActorRecord(spec=common_pb2.ActorSpec(actor_id="t", namespace="ns", resources={"bundle_group_g1": 0.001})),
    ]
    assert actor_demands(pending) == {(("CPU", 1.0), ("GPU", 1.0)): 1, (("CPU", 2.0),): 1}


def test_the_backlog_leaves_out_pinned_tasks_and_names_cpus() -> None:
    ready = {("", 1.0, "", ()): 3, ("node-x", 1.0, "", ()): 5, ("SPREAD", 0.5, "", (("GPU", 1.0),)): 2,
             ("", 1.0, "env", ()): 1, ("", 2.0, "", ()): 0}
    demands = backlog_demands(ready, lambda placement: placement if placement.startswith("node") else "")
    assert sorted((sorted(d.resources.items()), d.count) for d in demands) == [
        ([("CPU", 0.5), ("GPU", 1.0)], 2), ([("CPU", 1.0)], 4)]


class _FakeHub:
    def __init__(self) -> None:
        self.reports: list[list[Demand]] = []

    def report_demand(self, reporter: str, demands: list[Demand]) -> None:
        self.reports.append(list(demands))


def test_the_reporter_sends_once_a_second_while_tasks_wait_then_one_empty_report() -> None:
    clock = FakeClock()
    hub = _FakeHub()
    backlog: list[Demand] = []
    reporter = TaskDemandReporter(hub, "me:1", lambda: list(backlog), clock.now)  # type: ignore[arg-type]
    reporter.tick()
    assert hub.reports == []  # nothing waits: nothing is sent
    backlog.append(demand(2))
    clock.advance(1.0)
    reporter.tick()
    reporter.tick()  # within the second: nothing more
    assert hub.reports == [[demand(2)]]
    backlog.clear()
    for _ in range(3):
        clock.advance(1.0)
        reporter.tick()
    assert hub.reports == [[demand(2)], []]


def test_request_resources_checks_its_arguments() -> None:
    assert _bundles(4, None) == [Demand({"CPU": 1.0}, 4)]
    assert _bundles(0, [{"GPU": 1}]) == [Demand({"GPU": 1.0})]
    assert _bundles(None, None) == []
    for bad in ({"num_cpus": -1}, {"num_cpus": 1.5}, {"num_cpus": True}, {"bundles": {"CPU": 1}},
                {"bundles": [{"CPU": -1}]}, {"bundles": [{"CPU": 0}]}, {"bundles": [{1: 1}]}, {"bundles": ["CPU"]}):
        with pytest.raises(OptionsError, match="request_resources"):
            _bundles(bad.get("num_cpus"), bad.get("bundles"))


# -- the submitter's side of nodes coming and going ---------------------------------------------------

def _task(seq: int, **options: Any) -> Task:
    return Task(seq, f"t{seq}", ("fn", b""), b"", TaskOptions(**options), [f"c.t{seq}.0"])


def test_waiting_tasks_ask_for_leases_once_nodes_join() -> None:
    state = SubmitState("head", FakeClock().now)
    state.nodes_seen({"head": 1.0})
    tasks = [_task(i) for i in range(4)]
    asks = [state.task_ready(t) for t in tasks]
    assert asks == [True, False, False, False]  # the cluster lends one lease at once
    assert state.nodes_seen({"head": 1.0, "w1": 2.0, "w2": 2.0}) == [tasks[0].pool] * 3  # the autoscaler's


def test_a_task_whose_only_fitting_node_left_waits_for_another() -> None:
    clock = FakeClock()
    state = SubmitState("head", clock.now)
    state.nodes_seen({"head": 1.0, "w1": 2.0})  # w1 is gone, the view does not know yet
    wide = _task(1, num_cpus=2.0)
    assert state.task_ready(wide) is True
    assert state.lease_requested(wide.pool) == "w1"
    again, doomed = state.lease_refused(wide.pool, "w1")  # its desk died with it
    assert (again, doomed) == (False, [])  # not sent to the head's desk, which could never lend it
    assert wide in state.ready
    assert state.nodes_seen({"head": 1.0}) == []  # waits, infeasible
    assert state.nodes_seen({"head": 1.0, "w3": 2.0}) == [wide.pool]  # a new worker
