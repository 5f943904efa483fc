"""Typed, validated options for actors and calls.

Unknown options and bad values raise `OptionsError` naming the option, at the call that
passed them (`@remote(...)`, `.options(...)`), instead of surfacing later inside the cluster
as a protobuf error or an actor that never starts. Options are parsed once there, so the
checks cost nothing per `.remote()` call.

The bounds are the wire's: every integer option travels in a protobuf field
(protos/actorhub/v1/common.proto, worker.proto), so it must fit that field's type; a float
that the hub compares or sums (CPUs) must be finite; a string must encode as UTF-8.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from actorhub.exceptions import OptionsError
from actorhub.hub.resources import check_amount, check_custom
from actorhub.runtime_env.spec import RuntimeEnvSpec
from actorhub.runtime_env.spec import parse as parse_runtime_env
from actorhub.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

__all__ = [
    "INT32_MAX",
    "UINT32_MAX",
    "ActorOptions",
    "CallOptions",
    "OptionsError",
    "checked_concurrency_group",
    "checked_name",
]

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1

# A count where -1 means "without limit", carried in an int32 field (ActorSpec.max_restarts,
# max_task_retries, max_pending_calls); retries kept only by the caller get the same bound.
Int32Limit = Annotated[int, Field(ge=-1, le=INT32_MAX)]
# Call.num_returns and MethodMeta.num_returns are uint32.
NumReturns = Annotated[int, Field(ge=0, le=UINT32_MAX)]
# What num_returns= takes: a count, or a generator's items streamed one by one (runtime/object_ref_generator.py).
NumReturnsOption = NumReturns | Literal["streaming", "dynamic"]
# CPUs are summed and compared by the hub and the lease desks: NaN or inf would never fit
# anywhere (the actor stays PENDING forever) or would poison the sums.
Cpus = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# The validation context key that lets actorhub's own code use the system namespace.
_SYSTEM = "actorhub_system"
_MAX_SHOWN = 60  # characters of a bad value quoted in a message


def checked_name(value: Any, what: str, *, namespace: bool = False, allow_system: bool = False) -> str:
    """`value` if it is a usable name (namespaces.rules), else a ValueError saying why.

    A namespace (`namespace=True`) may be the system one only with `allow_system`. Inside a
    pydantic validator only ValueError becomes a validation error (a TypeError would escape
    raw), so the rules' TypeError is turned into one.
    """
    # namespaces/ builds on the kernel, which imports it only where it is used (its rules are pure).
    from actorhub.namespaces.rules import validate_name, validate_namespace

    try:
        if namespace:
            return validate_namespace(value, allow_system=allow_system)
        return validate_name(value, what)
    except TypeError as e:
        raise ValueError(str(e)) from None


def checked_concurrency_group(value: Any) -> str:
    """`value` if it can name a concurrency group, else a ValueError saying why."""
    if not isinstance(value, str) or not value or not value.strip():
        raise ValueError(f"a concurrency group name must be a non-empty string, not {value!r}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"a concurrency group name must encode as UTF-8: {value!r}") from None
    return value


def _shown(value: Any) -> str:
    text = repr(value)  # repr escapes lone surrogates, so the message itself always encodes
    return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]}..."


def _problem(err: ErrorDetails) -> tuple[str, str]:
    """(`option=value`, what was wrong) of one pydantic error, in the caller's terms."""
    loc = err["loc"]
    option = str(loc[0]) if loc else "options"
    kind = err["type"]
    if kind == "extra_forbidden":
        return option, "unknown option"
    message = err["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind.startswith("is_instance"):
        message = f"{message}, not {type(err['input']).__name__}"
    return f"{option}={_shown(err['input'])}", message


def describe(error: ValidationError) -> str:
    """One clause per option; a union (scheduling_strategy) reports each member it tried."""
    by_option: dict[str, list[str]] = {}
    for err in error.errors():
        option, message = _problem(err)
        seen = by_option.setdefault(option, [])
        if message not in seen:
            seen.append(message)
    return "; ".join(f"{option}: {' or '.join(messages)}" for option, messages in by_option.items())


class _Options(BaseModel):
    # strict: a wrong type is an error, not a conversion ("3" is not 3, True is not 1, 2.0 is
    # not a count); an int still passes as a float.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    # Set only by ActorOptions.for_system, and carried through merged(): actorhub's own actors
    # may live in the system namespace, and options derived from theirs keep that right.
    _system: bool = PrivateAttr(default=False)

    @classmethod
    def parse(cls, where: str, **values: Any) -> Any:
        """The options a user passed: the public way in (`@remote(...)`, `.options(...)`)."""
        return cls._validated(where, values, False)

    @classmethod
    def _validated(cls, where: str, values: dict[str, Any], system: bool) -> Any:
        try:
            options = cls.model_validate(values, context={_SYSTEM: True} if system else None)
        except ValidationError as e:
            raise OptionsError(f"invalid options for {where}: {describe(e)}") from None
        options._system = system
        return options

    def merged(self, where: str, **values: Any) -> Any:
        # Not model_dump(): that turns a scheduling strategy into a dict, which strict mode refuses.
        current = {name: getattr(self, name) for name in self.model_fields_set}
        return self._validated(where, {**current, **values}, self._system)


class _PlacedOptions(_Options):
    """Options of what runs on a node: where it may run."""

    scheduling_strategy: (
        NodeAffinitySchedulingStrategy | PlacementGroupSchedulingStrategy | Literal["DEFAULT", "SPREAD"] | None
    ) = None
    # Merged over the env of the process that creates it when it is created (runtime_env/context.py).
    runtime_env: RuntimeEnvSpec | None = None

    @field_validator("runtime_env", mode="before")
    @classmethod
    def _parsed_runtime_env(cls, value: Any) -> RuntimeEnvSpec | None:
        # Checked here, at the caller: local paths must exist, types must be right.
        return parse_runtime_env(value)

    @field_validator("scheduling_strategy")
    @classmethod
    def _node_id_on_the_wire(cls, value: Any) -> Any:
        # The dataclass checks only that node_id is set; it travels as ActorSpec.node_id.
        if isinstance(value, NodeAffinitySchedulingStrategy):
            checked_name(value.node_id, "node_id")
        return value

    @property
    def node_id(self) -> str:
        """The node its NodeAffinitySchedulingStrategy names (a rule, or a preference when
        soft), or "" for none."""
        strategy = self.scheduling_strategy
        return strategy.node_id if isinstance(strategy, NodeAffinitySchedulingStrategy) else ""

    @property
    def affinity(self) -> NodeAffinitySchedulingStrategy | None:
        strategy = self.scheduling_strategy
        return strategy if isinstance(strategy, NodeAffinitySchedulingStrategy) else None

    @property
    def spread(self) -> bool:
        return self.scheduling_strategy == "SPREAD"


class ActorOptions(_PlacedOptions):
    name: str | None = None
    namespace: str | None = None
    lifetime: Literal["detached", "non_detached"] | None = None
    get_if_exists: bool = False
    max_restarts: Int32Limit = 0
    max_task_retries: Int32Limit = 0
    max_concurrency: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = None  # ActorSpec: uint32
    # Named groups of methods, each with its own limit (ActorSpec.concurrency_groups: uint32).
    concurrency_groups: dict[str, Annotated[int, Field(ge=1, le=UINT32_MAX)]] | None = None
    max_pending_calls: Int32Limit = -1
    num_cpus: Cpus = 0.0
    # Ray's rules (hub/resources.py): a fraction below 1 shares a GPU, more than 1 is whole.
    num_gpus: float = 0.0
    memory: float = 0.0  # bytes, reserved on the node like any other resource
    resources: dict[str, float] | None = None
    # Calls checked against the methods' type hints at the caller, returns in the actor (api/typed.py).
    typed: bool = False
    # max_restarts per window of this many seconds (OTP's restart intensity), not for its life.
    restart_window_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    # {"calls": N, "seconds": T}: when the worker checkpoints an actor that defines
    # __actorhub_checkpoint__ / __actorhub_restore__ (worker/checkpoints.py).
    checkpoint_interval: dict[str, float] | None = None

    @classmethod
    def for_system(cls, **values: Any) -> ActorOptions:
        """Options of actorhub's own actors (lease desks, task executors): the one way to put
        an actor in the system namespace, which `parse` (every user's way in) refuses."""
        options: ActorOptions = cls._validated("an actorhub system actor", values, True)
        return options

    @field_validator("checkpoint_interval")
    @classmethod
    def _usable_interval(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        unknown = set(value) - {"calls", "seconds"}
        if unknown or not value:
            raise ValueError('checkpoint_interval takes {"calls": N, "seconds": T} (either or both), '
                             f"not {sorted(unknown) or 'nothing'}")
        calls = value.get("calls")
        if calls is not None and (not float(calls).is_integer() or not 1 <= calls <= UINT32_MAX):
            raise ValueError(f"checkpoint_interval calls must be a whole number >= 1, got {calls!r}")
        seconds = value.get("seconds")
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"checkpoint_interval seconds must be a finite number > 0, got {seconds!r}")
        return value

    @field_validator("restart_window_s")
    @classmethod
    def _window_needs_a_budget(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("max_restarts", 0) < 1:
            raise ValueError("restart_window_s needs max_restarts >= 1 (the number of restarts allowed per window)")
        return value

    @field_validator("name")
    @classmethod
    def _usable_name(cls, value: str | None) -> str | None:
        if value is not None:
            checked_name(value, "actor name")
            if not value.strip():
                raise ValueError("an actor name must not be blank")
        return value

    @field_validator("namespace")
    @classmethod
    def _usable_namespace(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        system = bool(info.context and info.context.get(_SYSTEM))
        return checked_name(value, "namespace", namespace=True, allow_system=system)

    @field_validator("concurrency_groups")
    @classmethod
    def _usable_group_names(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for name in value or ():
            checked_concurrency_group(name)
        return value

    @field_validator("num_gpus", "memory")
    @classmethod
    def _usable_amount(cls, value: float, info: ValidationInfo) -> float:
        return check_amount(str(info.field_name), value)

    @field_validator("resources")
    @classmethod
    def _usable_resources(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return None if value is None else check_custom(value)

    @property
    def placement_cpus(self) -> float:
        """Ray's default for a user's actor that asks for nothing: a node with 1 CPU to place
        it, none held while it runs. actorhub's own actors go where they are sent."""
        asked = {"num_cpus", "num_gpus", "memory", "resources"} & self.model_fields_set
        return 0.0 if self._system or asked else 1.0

    @property
    def resource_vector(self) -> dict[str, float]:
        """What it asks for besides CPUs: ActorSpec.resources."""
        vector = dict(self.resources or {})
        if self.num_gpus > 0:
            vector["GPU"] = self.num_gpus
        if self.memory > 0:
            vector["memory"] = self.memory
        return vector

    @property
    def detached(self) -> bool:
        return self.lifetime == "detached"


class CallOptions(_Options):
    num_returns: NumReturnsOption = 1
    name: str | None = None
    max_task_retries: Int32Limit | None = None
    concurrency_group: str | None = None

    @field_validator("concurrency_group")
    @classmethod
    def _usable_group(cls, value: str | None) -> str | None:
        return None if value is None else checked_concurrency_group(value)

    @field_validator("name")
    @classmethod
    def _usable_name(cls, value: str | None) -> str | None:
        return None if value is None else checked_name(value, "call name")
