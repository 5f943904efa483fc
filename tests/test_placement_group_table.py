"""The hub's placement group decisions without processes: `plan` under each strategy, the
table's reservations on node records, rescheduling after a node's death, removal with its
actors and its job, the store (round trip and the upgrade of a version-2 store)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actorhub._proto.v1 import common_pb2, hub_pb2
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.bundles import check_bundles, group_of, group_request
from actorhub.hub.control_store import SCHEMA_VERSION, SQLiteControlStore, open_store
from actorhub.hub.placement_group_table import UnknownGroup
from actorhub.hub.placement_groups import NodeRoom, plan
from actorhub.hub.records import InvalidSpec, NameTaken

GROUP = "ab" * 18


def rooms(*cpus: float) -> list[NodeRoom]:
    return [NodeRoom(f"n{i}", {"CPU": c}, (0.0, 0, i)) for i, c in enumerate(cpus)]


def spec(group_id: str = GROUP, strategy: str = "PACK", bundles: tuple[dict[str, float], ...] = ({"CPU": 1},),
         name: str = "", job: str = "00000001", detached: bool = False) -> hub_pb2.PlacementGroupSpec:
    return hub_pb2.PlacementGroupSpec(
        placement_group_id=group_id, strategy=strategy, name=name, namespace="ns", creator_job_id=job,
        detached=detached, bundles=[hub_pb2.PlacementGroupBundle(resources=b) for b in bundles])


def table_with_nodes(*cpus: float) -> ActorTable:
    table = ActorTable()
    for i, c in enumerate(cpus):
        table.register_node(f"n{i}", f"127.0.0.1:{9000 + i}", c, 100 + i, resources={"x": 1})
    return table


def node(table: ActorTable, node_id: str) -> tuple[float, dict[str, float]]:
    status = next(n for n in table.cluster_status().nodes if n.node_id == node_id)
    return status.available_cpus, dict(status.available_resources)


# ---- plan: each strategy ----------------------------------------------------------------

def test_strict_pack_takes_one_node_or_nothing() -> None:
    assert plan("STRICT_PACK", [{"CPU": 1}, {"CPU": 1}], [0, 1], {}, rooms(1, 2)) == {0: "n1", 1: "n1"}
    assert plan("STRICT_PACK", [{"CPU": 2}, {"CPU": 1}], [0, 1], {}, rooms(2, 2)) is None


def test_pack_prefers_one_node_then_shares_as_few_as_it_can() -> None:
    assert set(plan("PACK", [{"CPU": 1}] * 2, [0, 1], {}, rooms(2, 2)).values()) == {"n0"}  # type: ignore[union-attr]
    chosen = plan("PACK", [{"CPU": 2}, {"CPU": 1}, {"CPU": 1}], [0, 1, 2], {}, rooms(2, 2, 2))
    assert chosen is not None and len(set(chosen.values())) == 2


def test_strict_spread_needs_a_node_per_bundle_and_searches_for_a_fit() -> None:
    assert plan("STRICT_SPREAD", [{"CPU": 1}] * 3, [0, 1, 2], {}, rooms(4, 4)) is None
    # Greedy in node order would put the small bundle on the only node the big one fits.
    chosen = plan("STRICT_SPREAD", [{"CPU": 0.5}, {"CPU": 2}], [0, 1], {}, rooms(2, 1))
    assert chosen == {0: "n1", 1: "n0"}
    # A rescheduled bundle keeps off the nodes its siblings hold.
    assert plan("STRICT_SPREAD", [{"CPU": 1}] * 2, [1], {0: "n0"}, rooms(4, 4)) == {1: "n1"}


def test_spread_uses_distinct_nodes_first_then_shares() -> None:
    assert sorted(plan("SPREAD", [{"CPU": 1}] * 3, [0, 1, 2], {}, rooms(2, 2, 2)).values()) == ["n0", "n1", "n2"]  # type: ignore[union-attr]
    chosen = plan("SPREAD", [{"CPU": 1}] * 3, [0, 1, 2], {}, rooms(2, 2))
    assert chosen is not None and sorted(chosen.values()) == ["n0", "n0", "n1"]


def test_bundles_are_checked_and_requests_rewritten_into_ray_names() -> None:
    for bad, message in [([], "must not be empty"), ([{"x": 0}], "asks for no resources"),
                         ([{"GPU": 1.5}], "whole number"), ([{"CPU_group_x": 1}], "group's own")]:
        with pytest.raises(ValueError, match=message):
            check_bundles(bad)
    assert check_bundles([{"CPU": 1.5, "GPU": 0}]) == [{"CPU": 1.5}]
    need = group_request(GROUP, 1, 2.0, {"GPU": 1})
    assert need == {f"CPU_group_1_{GROUP}": 2.0, f"GPU_group_1_{GROUP}": 1.0, f"bundle_group_1_{GROUP}": 0.001,
                    f"CPU_group_{GROUP}": 2.0, f"GPU_group_{GROUP}": 1.0, f"bundle_group_{GROUP}": 0.001}
    assert group_request(GROUP, -1, 0, {}) == {f"bundle_group_{GROUP}": 0.001}
    assert group_of(need) == (GROUP, 1) and group_of({f"bundle_group_{GROUP}": 1}) == (GROUP, -1)


# ---- the table --------------------------------------------------------------------------

def test_a_group_reserves_its_bundles_on_the_nodes_and_gives_them_back() -> None:
    table = table_with_nodes(2, 2)
    info, _ = table.create_group(spec(strategy="STRICT_SPREAD", bundles=({"CPU": 1}, {"CPU": 1, "x": 0.5})))
    assert info.state == "CREATED" and sorted(info.bundle_node_ids) == ["n0", "n1"]
    holder = info.bundle_node_ids[1]
    cpus, vector = node(table, holder)
    assert cpus == 1 and vector[f"CPU_group_1_{GROUP}"] == 1 and vector[f"bundle_group_{GROUP}"] == 1000
    assert vector["x"] == 0.5 and vector[f"x_group_{GROUP}"] == 0.5
    # Idempotent by id: a retried creation gets the same group.
    assert table.create_group(spec(strategy="STRICT_SPREAD", bundles=({"CPU": 1}, {"CPU": 1, "x": 0.5})))[0] == info
    table.remove_group(GROUP)
    assert node(table, holder) == (2, {"x": 1})
    assert table.find_group(GROUP).state == "REMOVED"
    with pytest.raises(UnknownGroup):
        table.remove_group("cd" * 18)


def test_an_infeasible_group_waits_with_its_reason_and_takes_nothing() -> None:
    table = table_with_nodes(2, 2)
    info, _ = table.create_group(spec(strategy="STRICT_PACK", bundles=({"CPU": 2}, {"CPU": 1})))
    assert info.state == "PENDING" and info.infeasible and info.pending_reason.startswith("infeasible")
    assert node(table, "n0")[0] == 2 and node(table, "n1")[0] == 2
    # A node that fits joining places it.
    table.register_node("n2", "127.0.0.1:9002", 4, 102)
    assert table.find_group(GROUP).state == "CREATED"


def test_bad_specs_and_taken_names_are_refused() -> None:
    table = table_with_nodes(2)
    with pytest.raises(InvalidSpec, match="unknown placement strategy"):
        table.create_group(spec(strategy="TIGHT"))
    with pytest.raises(InvalidSpec, match="36 hex digits"):
        table.create_group(spec(group_id="short"))
    table.create_group(spec(name="g"))
    with pytest.raises(NameTaken):
        table.create_group(spec(group_id="cd" * 18, name="g"))
    assert table.find_group("", "g", "ns").spec.placement_group_id == GROUP


def test_a_dead_nodes_bundles_are_rescheduled() -> None:
    table = table_with_nodes(2, 2, 2)
    info, _ = table.create_group(spec(strategy="STRICT_SPREAD", bundles=({"CPU": 1}, {"CPU": 1})))
    lost = info.bundle_node_ids[0]
    table.node_died(lost, 1)
    again = table.find_group(GROUP)
    assert again.state == "CREATED" and lost not in again.bundle_node_ids
    assert len(set(again.bundle_node_ids)) == 2


def test_removal_kills_the_groups_actors_and_a_job_end_removes_its_groups() -> None:
    table = table_with_nodes(2)
    table.create_group(spec(bundles=({"CPU": 1},)))
    table.create_group(spec(group_id="cd" * 18, bundles=({"CPU": 0.5},), detached=True))
    actor = common_pb2.ActorSpec(
        actor_id="a1", class_name="A", namespace="ns", owner_job_id="00000001", detached=True,
        placement_group_id=GROUP, resources=group_request(GROUP, 0, 1, {}))
    _, _, decisions = table.create_actor(actor, False)
    assert decisions.placements and decisions.placements[0].node_id == "n0"
    table.start_finished(decisions.placements[0], _ok())
    job = table.register_job("ns", 1, "127.0.0.1:1", False)
    out = table.job_ended(job.job_id)  # job 00000001: its own group goes, the detached one stays
    assert table.find_group(GROUP).state == "REMOVED" and table.find_group("cd" * 18).state == "CREATED"
    assert [k.actor_id for k in out.kills] == ["a1"]


def test_groups_survive_the_store_and_a_version_2_store_is_upgraded(tmp_path: Path) -> None:
    table = table_with_nodes(2, 2)
    table.create_group(spec(strategy="STRICT_SPREAD", bundles=({"CPU": 1}, {"CPU": 1}), name="kept"))
    store = SQLiteControlStore.in_session(tmp_path)
    store.save(table.take_dirty())
    snapshot = store.load()
    store.close()
    fresh = ActorTable()
    fresh.restore(snapshot)
    info = fresh.find_group("", "kept", "ns")
    assert info.state == "CREATED" and sorted(info.bundle_node_ids) == ["n0", "n1"]
    # Its nodes register again: the bundles hold there again.
    for i in range(2):
        fresh.register_node(f"n{i}", f"127.0.0.1:{9000 + i}", 2, 100 + i, hosted=[], resources={"x": 1})
    assert node(fresh, "n0")[0] == 1 and node(fresh, "n1")[0] == 1
    old = tmp_path / "v2.sqlite3"
    open_store(old, must_exist=False).close()
    con = sqlite3.connect(old)
    con.execute("DROP TABLE placement_groups")
    con.execute("UPDATE meta SET value=2 WHERE key='schema_version'")
    con.commit()
    con.close()
    upgraded = open_store(old, must_exist=True)
    assert upgraded.load().placement_groups == []
    upgraded.close()
    con = sqlite3.connect(old)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == SCHEMA_VERSION
    con.close()


def _ok() -> object:
    from actorhub._proto.v1 import node_pb2

    return node_pb2.NodeStartActorReply(ok=True, address="w", worker_id="wk", pid=7)


def test_an_actor_of_a_pending_group_waits_for_the_group() -> None:
    table = table_with_nodes(1)
    table.create_group(spec(bundles=({"CPU": 2},)))
    actor = common_pb2.ActorSpec(actor_id="a1", class_name="A", namespace="ns", owner_job_id="00000001",
                                 placement_group_id=GROUP, resources=group_request(GROUP, -1, 1, {}))
    info, _, decisions = table.create_actor(actor, False)
    # As infeasible as its group (no node has 2 CPUs), and saying why.
    assert not decisions.placements and info.infeasible
    assert info.pending_reason.startswith(f"waiting for its placement group {GROUP} (PENDING: infeasible")
    table.register_node("n1", "127.0.0.1:9001", 2, 101)
    assert table.get_actor("a1").node_id == "n1"


def test_actors_in_a_gpu_bundle_get_the_bundles_gpu_ids() -> None:
    table = ActorTable()
    table.register_node("n0", "127.0.0.1:9000", 4, 100, resources={"GPU": 4})
    outside = common_pb2.ActorSpec(actor_id="a0", class_name="A", namespace="ns", owner_job_id="00000001",
                                   detached=True, resources={"GPU": 1})
    _, _, decisions = table.create_actor(outside, False)
    assert decisions.placements[0].gpu_ids == (0,)
    info, _ = table.create_group(spec(bundles=({"GPU": 2},)))
    assert info.state == "CREATED"
    placed = []
    for n in (1, 2, 3):
        actor = common_pb2.ActorSpec(
            actor_id=f"a{n}", class_name="A", namespace="ns", owner_job_id="00000001", detached=True,
            placement_group_id=GROUP, placement_group_bundle_index=0, resources=group_request(GROUP, 0, 0, {"GPU": 1}))
        _, _, decisions = table.create_actor(actor, False)
        placed.append(decisions.placements[0].gpu_ids if decisions.placements else None)
    # The bundle holds GPUs 1 and 2; its actors share them out; a third waits for one.
    assert sorted(placed[:2]) == [(1,), (2,)] and placed[2] is None
    table.request_kill("a1", no_restart=True)
    table.worker_exited("a1", 0, "killed")
    assert table.get_actor("a3").node_id == "n0"
