"""Bad option values fail at the call that passed them, naming the option (issue 8).

Every check here runs with a cluster up (the module's), and with the hub client and the
cluster launcher replaced by spies: a refused option must raise OptionsError (or TypeError,
for kill()'s arguments) before anything is asked of the cluster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actorhub
from actorhub.api import cluster as cluster_api
from actorhub.api.options import INT32_MAX, UINT32_MAX, ActorOptions, CallOptions
from actorhub.api.options import OptionsError as OptionsErrorFromOptions
from actorhub.exceptions import OptionsError
from actorhub.namespaces import SYSTEM_NAMESPACE
from actorhub.tasks.options import TaskOptions
from actorhub.wire.hub import HubClient

pytestmark = pytest.mark.usefixtures("shared_cluster")

LONE_SURROGATE = "a\ud800"
# What the hub client would be asked, and what starts a cluster: none may run for a bad option.
HUB_CALLS = ("create_actor", "get_named_actor", "list_actors", "kill_actor", "register_job")


@actorhub.remote
class Echo:
    def echo(self, x: Any) -> Any:
        return x


@actorhub.remote
def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def hub_untouched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records (and refuses) every hub call and cluster start; the test ends with none made."""
    asked: list[str] = []

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            asked.append(what)
            raise AssertionError(f"{what} reached the cluster")

        return call

    for method in HUB_CALLS:
        monkeypatch.setattr(HubClient, method, refuse(method))
    monkeypatch.setattr(cluster_api, "start_head", refuse("start_head"))
    yield asked
    assert asked == [], f"a refused option still reached the cluster: {asked}"


def test_options_error_is_one_class_in_both_modules() -> None:
    assert OptionsError is OptionsErrorFromOptions
    assert issubclass(OptionsError, actorhub.exceptions.ActorHubError)
    assert issubclass(OptionsError, ValueError)  # callers that caught ValueError still do
    assert "OptionsError" in actorhub.exceptions.__all__


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("max_restarts", 2**31, "less than or equal to 2147483647"),
        ("max_restarts", -2, "greater than or equal to -1"),
        ("max_task_retries", 2**31, "less than or equal to 2147483647"),
        ("max_pending_calls", 2**40, "less than or equal to 2147483647"),
        ("max_concurrency", 2**33, "less than or equal to 4294967295"),
        ("max_concurrency", 0, "greater than or equal to 1"),
        ("max_restarts", "3", "valid integer, not str"),
        ("max_restarts", True, "valid integer, not bool"),
        ("max_concurrency", 2.0, "valid integer, not float"),
        ("num_cpus", math.inf, "finite number"),
        ("num_cpus", math.nan, "finite number"),
        ("num_cpus", -1, "greater than or equal to 0"),
        ("num_cpus", "2", "valid number, not str"),
        ("num_gpus", math.nan, "finite number"),
        ("name", LONE_SURROGATE, "encodable as UTF-8"),
        ("name", 7, "valid string, not int"),
        ("name", "   ", "blank"),
        ("namespace", LONE_SURROGATE, "encodable as UTF-8"),
        ("namespace", 123, "valid string, not int"),
        ("namespace", "", "must not be empty"),
        ("namespace", SYSTEM_NAMESPACE, "reserved for actorhub's own actors"),
        ("get_if_exists", "yes", "valid boolean, not str"),
        ("lifetime", "forever", "'detached' or 'non_detached'"),
        ("scheduling_strategy", actorhub.util.scheduling_strategies.NodeAffinitySchedulingStrategy(LONE_SURROGATE),
         "encodable as UTF-8"),
    ],
)
def test_bad_actor_options_are_refused_at_options(option: str, value: Any, why: str, hub_untouched: list[str]) -> None:
    with pytest.raises(OptionsError) as info:
        Echo.options(**{option: value})
    message = str(info.value)
    assert "Echo.options()" in message and f"{option}=" in message and why in message, message
    message.encode("utf-8")  # the message itself never holds what could not be encoded

    with pytest.raises(OptionsError, match=option):  # the decorator parses the same way
        actorhub.remote(**{option: value})(type("Decorated", (), {}))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("num_returns", 2**32),
        ("num_returns", -1),
        ("max_task_retries", 2**31),
        ("name", LONE_SURROGATE),
    ],
)
def test_bad_call_options_are_refused_at_options(option: str, value: Any, hub_untouched: list[str]) -> None:
    with pytest.raises(OptionsError, match=f"Echo.echo.options\\(\\): {option}="):
        _handle_without_hub().echo.options(**{option: value})


def _handle_without_hub() -> Any:
    """A handle made without the hub (as an unpickled one is): only its checks are under test."""
    from actorhub.api.actor_handle import ActorHandle, HandleState, MethodInfo

    state = HandleState("a" * 24, "Echo", {"echo": MethodInfo("echo")})
    return ActorHandle(state, None)


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("num_cpus", math.inf, "finite number"),
        ("num_cpus", math.nan, "finite number"),
        ("num_cpus", -0.5, "greater than or equal to 0"),
        ("num_returns", 2**32, "less than or equal to 4294967295"),
        ("max_retries", 2**31, "less than or equal to 2147483647"),
        ("max_retries", "3", "valid integer, not str"),
        ("name", LONE_SURROGATE, "encodable as UTF-8"),
        ("retry_exceptions", [ValueError, "KeyError"], "retry_exceptions"),
    ],
)
def test_bad_task_options_are_refused_at_options(option: str, value: Any, why: str, hub_untouched: list[str]) -> None:
    with pytest.raises(OptionsError) as info:
        add.options(**{option: value})
    assert f"{option}=" in str(info.value) and why in str(info.value), str(info.value)
    with pytest.raises(OptionsError, match=f"{option}="):
        actorhub.remote(**{option: value})(lambda: None)


def test_a_method_num_returns_out_of_range_is_refused_when_the_class_is_made_remote() -> None:
    class Many:
        @actorhub.method(num_returns=2**32)
        def lots(self) -> None:
            pass

    with pytest.raises(OptionsError, match=r"Many\.lots: num_returns=4294967296"):
        actorhub.remote(Many)


def test_get_actor_and_list_named_actors_check_their_arguments(hub_untouched: list[str]) -> None:
    with pytest.raises(OptionsError, match=r"get_actor\(\): namespace=123: a namespace must be a str, not int"):
        actorhub.get_actor("x", namespace=123)  # type: ignore[arg-type]
    with pytest.raises(OptionsError, match=r"name='a\\ud800': an actor name must be encodable as UTF-8"):
        actorhub.get_actor(LONE_SURROGATE)
    with pytest.raises(OptionsError, match=r"namespace=.*encodable as UTF-8"):
        actorhub.get_actor("x", namespace=LONE_SURROGATE)
    with pytest.raises(OptionsError, match="name=None: an actor name must be a str"):
        actorhub.get_actor(None)  # type: ignore[arg-type]
    with pytest.raises(OptionsError, match="name='': an actor name must not be empty"):
        actorhub.get_actor("")
    with pytest.raises(OptionsError, match="reserved"):
        actorhub.get_actor("lease-desk-x", namespace=SYSTEM_NAMESPACE)
    with pytest.raises(OptionsError, match="all_namespaces='yes': must be a bool"):
        actorhub.util.list_named_actors(all_namespaces="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("namespace", "why"),
    [(SYSTEM_NAMESPACE, "reserved"), (123, "must be a str, not int"), (LONE_SURROGATE, "UTF-8"), ("", "empty")],
)
def test_init_checks_its_namespace_before_starting_anything(namespace: Any, why: str, hub_untouched: list[str]) -> None:
    # Checked before the "already called" check, so a bad namespace is named even here.
    with pytest.raises(OptionsError, match=f"init\\(\\): namespace=.*{why}"):
        actorhub.init(namespace=namespace)
    assert actorhub.is_initialized()  # the module's cluster is untouched


def test_kill_checks_its_argument_types(hub_untouched: list[str]) -> None:
    with pytest.raises(TypeError, match="kill\\(\\) takes an actor handle, not str"):
        actorhub.kill("echo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no_restart must be a bool, not str"):
        actorhub.kill(_handle_without_hub(), no_restart="no")  # type: ignore[arg-type]


def test_values_at_the_wire_bounds_are_accepted_and_the_actor_runs() -> None:
    edge = Echo.options(
        max_restarts=INT32_MAX, max_task_retries=INT32_MAX, max_pending_calls=INT32_MAX,
        max_concurrency=UINT32_MAX, name="édge-ünïcode-名前",
    ).remote()
    assert actorhub.get(edge.echo.remote(1), timeout=60) == 1
    assert actorhub.get_actor("édge-ünïcode-名前").actor_id == edge.actor_id
    actorhub.kill(edge)


def test_the_system_namespace_is_actorhubs_own() -> None:
    from actorhub.api.cluster import connected_runtime
    from actorhub.namespaces.lookup import get_system_actor
    from actorhub.tasks.lease_desk import desk_name

    assert actorhub.get(add.remote(1, 2), timeout=60) == 3  # the node's desk, made in the system namespace
    desk_id = desk_name(actorhub.get_runtime_context().get_node_id())
    with pytest.raises(OptionsError, match="reserved"):
        actorhub.get_actor(desk_id, SYSTEM_NAMESPACE)
    with pytest.raises(OptionsError, match="reserved"):
        Echo.options(name=desk_id, namespace=SYSTEM_NAMESPACE)
    assert get_system_actor(connected_runtime(), desk_id).class_name == "LeaseDesk"
    listed = actorhub.util.list_named_actors(all_namespaces=True)
    assert all(entry["namespace"] != SYSTEM_NAMESPACE for entry in listed)
    # The internal way in: the right to the system namespace is explicit, and kept by .options().
    system = ActorOptions.for_system(namespace=SYSTEM_NAMESPACE).merged("internal", max_restarts=-1)
    assert system.namespace == SYSTEM_NAMESPACE and system.max_restarts == -1
    with pytest.raises(OptionsError, match="reserved"):
        ActorOptions.parse("user", namespace=SYSTEM_NAMESPACE)


# -- property: whatever parse accepts, the wire accepts; whatever it refuses names the option --
_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=8)
_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), _ANY_TEXT,
)
_ACTOR_INTS = ("max_restarts", "max_task_retries", "max_concurrency", "max_pending_calls")
_ACTOR_STRS = ("name", "namespace")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(
            (*_ACTOR_INTS, *_ACTOR_STRS, "num_cpus", "get_if_exists")
        ),
        _ANY_VALUE,
        max_size=4,
    )
)
def test_whatever_actor_options_accept_fits_the_wire(values: dict[str, Any]) -> None:
    from actorhub._proto.v1 import common_pb2

    try:
        options = ActorOptions.parse("P.options()", **values)
    except OptionsError as e:
        assert any(f"{option}=" in str(e) for option in values), (values, str(e))
        str(e).encode("utf-8")
        return
    spec = common_pb2.ActorSpec(
        name=options.name or "", namespace=options.namespace or "", max_restarts=options.max_restarts,
        max_task_retries=options.max_task_retries, max_concurrency=options.max_concurrency or 0,
        max_pending_calls=options.max_pending_calls, num_cpus=options.num_cpus,
    )
    spec.SerializeToString()
    assert math.isfinite(options.num_cpus) and options.num_cpus >= 0
    assert options.namespace != SYSTEM_NAMESPACE


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(("num_returns", "max_task_retries", "name")), _ANY_VALUE, max_size=3))
def test_whatever_call_options_accept_fits_the_wire(values: dict[str, Any]) -> None:
    from actorhub._proto.v1 import worker_pb2

    try:
        options = CallOptions.parse("P.m.options()", **values)
    except OptionsError as e:
        assert any(f"{option}=" in str(e) for option in values), (values, str(e))
        return
    worker_pb2.Call(method=options.name or "m", num_returns=options.num_returns).SerializeToString()
    assert options.max_task_retries is None or -1 <= options.max_task_retries <= INT32_MAX


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(("num_cpus", "num_returns", "max_retries", "name")), _ANY_VALUE, max_size=4))
def test_whatever_task_options_accept_is_usable(values: dict[str, Any]) -> None:
    try:
        options = TaskOptions.parse("f.options()", **values)
    except OptionsError as e:
        assert any(f"{option}=" in str(e) for option in values), (values, str(e))
        return
    assert math.isfinite(options.num_cpus) and options.num_cpus >= 0
    assert 0 <= options.num_returns <= UINT32_MAX and -1 <= options.max_retries <= INT32_MAX
    (options.name or "").encode("utf-8")
