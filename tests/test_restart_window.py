"""Windowed restart budgets: `max_restarts=R, restart_window_s=T` allows at most R restarts in
any T seconds (OTP's intensity and period), on the hub's clock."""

from __future__ import annotations

import os
import time

import pytest
from test_hub_actor_table import FakeClock, create_alive, make_spec, ok_reply

import actorhub
from actorhub.exceptions import ActorDiedError, OptionsError
from actorhub.hub.actor_table import ActorTable
from actorhub.hub.records import DEAD, RESTARTING, exit_cause


def _crash(table: ActorTable, incarnation: int) -> None:
    decisions = table.worker_exited("a1", incarnation, exit_cause(100 + incarnation, 1, 0))
    for p in decisions.placements:
        table.start_finished(p, ok_reply(p))


def test_restarts_are_counted_per_window_on_the_hubs_clock() -> None:
    clock = FakeClock()
    table = ActorTable(clock=clock, placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    table.register_node("n1", "node1:1", 4.0, 11)
    spec = make_spec(max_restarts=2)
    spec.restart_window_s = 60.0
    create_alive(table, spec)
    for incarnation in range(6):  # a crash every 40 s: never more than 2 in a minute
        clock.now += 40.0
        _crash(table, incarnation)
        assert table.get_actor("a1").state != DEAD
    assert table.get_actor("a1").num_restarts == 6  # more than max_restarts over its life
    clock.now += 61.0  # a quiet minute: the window is empty again
    _crash(table, 6)
    clock.now += 1.0
    _crash(table, 7)  # two restarts within a second: the window's budget, still allowed
    assert table.get_actor("a1").state != DEAD
    clock.now += 1.0
    _crash(table, 8)  # a 3rd within 60 s: over the budget
    info = table.get_actor("a1")
    assert info.state == DEAD and "2 restarts within the last 60 s" in info.death_cause.message


def test_a_restart_leaves_the_window_exactly_when_the_window_has_passed() -> None:
    clock = FakeClock()
    table = ActorTable(clock=clock, placement_timeout_s=30.0, avoid_node_s=1.0, poll_s=0.05)
    table.register_node("n1", "node1:1", 4.0, 11)
    spec = make_spec(max_restarts=1)
    spec.restart_window_s = 10.0
    create_alive(table, spec)
    _crash(table, 0)
    clock.now += 10.0  # the first restart is now exactly one window old: it no longer counts
    table.worker_exited("a1", 1, exit_cause(101, 1, 0))
    assert table.get_actor("a1").state == RESTARTING


def test_options_need_a_budget_for_the_window() -> None:
    with pytest.raises(OptionsError, match="restart_window_s needs max_restarts >= 1"):
        actorhub.remote(restart_window_s=5)(type("A", (), {}))
    with pytest.raises(OptionsError, match="greater than 0"):
        actorhub.remote(max_restarts=1, restart_window_s=0)(type("B", (), {}))


@actorhub.remote(max_restarts=1, restart_window_s=1.5)
class Flaky:
    def crash(self) -> None:
        os._exit(1)

    def pid(self) -> int:
        return os.getpid()


def _crash_and_wait(actor: actorhub.ActorHandle[Flaky]) -> None:
    with pytest.raises(ActorDiedError):
        actorhub.get(actor.crash.remote(), timeout=30)


def test_a_real_actor_outlives_a_lifetime_budget_but_not_a_burst(shared_cluster: actorhub.ClusterContext) -> None:
    actor = Flaky.remote()
    for _ in range(2):  # two crashes 2 s apart: one restart per window each time
        _crash_and_wait(actor)
        time.sleep(2.0)
        assert actorhub.get(actor.pid.remote(), timeout=30) > 0
    _crash_and_wait(actor)  # 1 restart in this window, then a burst: the second is over budget
    deadline = time.monotonic() + 30
    while True:
        try:
            actorhub.get(actor.crash.remote(), timeout=30)
        except ActorDiedError as e:
            if "restart_window_s" in str(e):
                break
        assert time.monotonic() < deadline, "the burst never ran out of the window's budget"
