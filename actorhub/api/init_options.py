"""init()'s keyword arguments beyond what it acts on directly: Ray's whole `ray.init` signature.

`resolve()` checks them, turns the ones actorhub honours into `Config` fields and job settings,
and names every other one that was given a value, so that init() warns once, in one line, about
all it ignores: a Ray program passing `dashboard_port=8265` runs, and says what did not happen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actorhub.exceptions import OptionsError
from actorhub.job_config import JobConfig

# Ray's hidden init() options (passed through **kwargs): each one's "not given" value and, for the
# ones actorhub does not honour, why.
_HIDDEN_IGNORED: dict[str, tuple[object, str]] = {
    "_redis_max_memory": (None, "no Redis"),
    "_redis_password": (None, "no Redis; the cluster token authenticates"),
    "_plasma_directory": (None, "the store lives in /dev/shm"),
    "_driver_object_store_memory": (None, "deprecated in Ray"),
    "_metrics_export_port": (None, "a local cluster's node takes a free port; ACTORHUB_METRICS_EXPORT_PORT sets it"),
    "_node_name": (None, "nodes are named by id"),
    "_skip_env_hook": (False, "no runtime_env hook"),
    "_cgroup_path": (None, "no resource isolation"),
    "allow_multiple": (False, "one cluster per driver"),
}
HIDDEN_HONOURED = ("_temp_dir", "_node_ip_address", "_tracing_startup_hook", "_memory", "_system_config",
                   "enable_object_reconstruction", "_enable_object_reconstruction")
# The keys of Ray's `_system_config` actorhub acts on (as Config's enable_object_reconstruction and lineage_max_bytes).
SYSTEM_CONFIG_KEYS = ("enable_object_reconstruction", "max_lineage_bytes")
REDIS_DEFAULT_PASSWORD = "5241590000000000"  # Ray's default: passing it changes nothing


@dataclass
class InitOptions:
    """What init() does with the options it does not handle itself."""

    config: dict[str, Any] = field(default_factory=dict)
    """Config fields to set (None values mean "not given")."""
    ignored: list[str] = field(default_factory=list)
    """`name=value (why)` for every option given a value that actorhub does not act on."""
    namespace: str | None = None
    """JobConfig's ray_namespace, for init() with no namespace of its own."""
    default_actor_lifetime: str = "non_detached"
    configure_logging: bool = True
    logging_format: str | None = None


def resolve(
    *,
    num_gpus: float | None,
    resources: Mapping[str, float] | None,
    labels: Mapping[str, str] | None,
    local_mode: bool,
    include_dashboard: bool | None,
    dashboard_host: str | None,
    dashboard_port: int | None,
    job_config: JobConfig | None,
    configure_logging: bool,
    logging_format: str | None,
    logging_config: object | None,
    log_to_driver: bool | None,
    runtime_env: Mapping[str, Any] | None,
    storage: str | None,
    enable_resource_isolation: bool,
    cgroup_path: str | None,
    system_reserved_cpu: float | None,
    system_reserved_memory: int | None,
    proxy_server_url: str | None,
    hidden: Mapping[str, Any],
) -> InitOptions:
    """Check and sort init()'s Ray options; raises TypeError for an unknown keyword, OptionsError for a bad value."""
    unknown = sorted(set(hidden) - set(_HIDDEN_IGNORED) - set(HIDDEN_HONOURED))
    if unknown:
        raise TypeError(f"init() got unknown keyword argument(s): {', '.join(unknown)}")
    out = InitOptions(configure_logging=bool(configure_logging), logging_format=logging_format)
    ignored = out.ignored
    _node_resources(out, num_gpus, resources, hidden.get("_memory"))
    if labels:
        ignored.append(f"labels={dict(labels)!r} (no node labels yet)")
    if local_mode:
        ignored.append("local_mode=True (tasks run in the cluster's workers)")
    _dashboard(out, include_dashboard, dashboard_host, dashboard_port)
    if logging_config is not None:
        ignored.append(f"logging_config={logging_config!r} (use logging_level and logging_format)")
    if storage is not None:
        ignored.append(f"storage={storage!r} (no cluster storage)")
    if enable_resource_isolation:
        ignored.append("enable_resource_isolation=True (no resource isolation)")
    for name, value in (("cgroup_path", cgroup_path), ("system_reserved_cpu", system_reserved_cpu),
                        ("system_reserved_memory", system_reserved_memory)):
        if value is not None:
            ignored.append(f"{name}={value!r} (no resource isolation)")
    if proxy_server_url is not None:
        ignored.append(f"proxy_server_url={proxy_server_url!r} (no client proxy)")
    for name, (unset, why) in _HIDDEN_IGNORED.items():
        value = hidden.get(name, unset)
        if value != unset and not (name == "_redis_password" and value == REDIS_DEFAULT_PASSWORD):
            ignored.append(f"{name}={value!r} ({why})")
    if log_to_driver is not None and not isinstance(log_to_driver, bool):
        raise OptionsError(f"init(): log_to_driver={log_to_driver!r}: must be a bool")
    _system_config(out, hidden)
    job_env = _job_settings(out, job_config)
    if runtime_env is not None and not isinstance(runtime_env, Mapping):
        raise OptionsError(f"init(): runtime_env must be a dict, not {type(runtime_env).__name__}")
    # As Ray: init()'s runtime_env replaces the job config's.
    env = dict(runtime_env) if runtime_env is not None else job_env
    temp_dir = hidden.get("_temp_dir")
    out.config.update(
        log_to_driver=log_to_driver,
        job_runtime_env=env or None,
        session_root=Path(temp_dir).expanduser() if temp_dir is not None else None,
        node_ip_address=_str_or_none("_node_ip_address", hidden.get("_node_ip_address")),
        tracing_startup_hook=_str_or_none("_tracing_startup_hook", hidden.get("_tracing_startup_hook")),
    )
    return out


def _dashboard(out: InitOptions, include: object, host: object, port: object) -> None:
    """The dashboard of a cluster init() starts: with include_dashboard=True, or a host or port
    given (a local cluster has none unless asked: every test and benchmark starts clusters)."""
    if include is not None and not isinstance(include, bool):
        raise OptionsError(f"init(): include_dashboard={include!r}: must be a bool")
    if host is not None and (not isinstance(host, str) or not host):
        raise OptionsError(f"init(): dashboard_host={host!r}: must be an address, e.g. '127.0.0.1' or '0.0.0.0'")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise OptionsError(f"init(): dashboard_port={port!r}: must be a port number (0-65535)")
    wanted = include if include is not None else (host is not None or port is not None)
    out.config.update(include_dashboard=wanted or None, dashboard_host=host, dashboard_port=port)


def _node_resources(out: InitOptions, num_gpus: object, resources: object, memory: object) -> None:
    """The local node's GPUs, custom resources and `_memory`, as Config fields (hub/resources.py's rules)."""
    from actorhub.hub.resources import check_custom

    if num_gpus is not None:
        if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or num_gpus < 0 \
                or not float(num_gpus).is_integer():
            raise OptionsError(f"init(): num_gpus={num_gpus!r}: a node's GPUs are a whole number >= 0")
        out.config["num_gpus"] = int(num_gpus)
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise OptionsError(f"init(): _memory={memory!r}: must be a number of bytes >= 0")
        out.config["memory"] = memory
    if resources is not None:
        if not isinstance(resources, Mapping):
            raise OptionsError(f"init(): resources must be a dict, not {type(resources).__name__}")
        try:
            out.config["resources"] = check_custom(resources)
        except ValueError as e:
            raise OptionsError(f"init(): resources: {e}") from None


def _system_config(out: InitOptions, hidden: Mapping[str, Any]) -> None:
    """Lineage reconstruction from `enable_object_reconstruction=` (or Ray's older
    `_enable_object_reconstruction=`) and `_system_config`; the system config's other keys are ignored, named."""
    system = hidden.get("_system_config")
    if system is None:
        system = {}
    elif not isinstance(system, Mapping):
        raise OptionsError(f"init(): _system_config must be a dict, not {type(system).__name__}")
    for key, value in system.items():
        if key not in SYSTEM_CONFIG_KEYS:
            out.ignored.append(f"_system_config={{{key!r}: {value!r}}} (not a setting of actorhub)")
    flags = {name: hidden[name] for name in ("enable_object_reconstruction", "_enable_object_reconstruction")
             if name in hidden}
    if "enable_object_reconstruction" in system:
        flags["_system_config['enable_object_reconstruction']"] = system["enable_object_reconstruction"]
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise OptionsError(f"init(): {name}={value!r}: must be a bool")
    if flags:
        out.config["enable_object_reconstruction"] = any(flags.values())
    limit = system.get("max_lineage_bytes")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise OptionsError(f"init(): _system_config['max_lineage_bytes']={limit!r}: must be a number of bytes >= 0")
        out.config["lineage_max_bytes"] = limit


def _job_settings(out: InitOptions, job_config: JobConfig | None) -> dict[str, Any]:
    if job_config is None:
        return {}
    if not isinstance(job_config, JobConfig):
        raise OptionsError(
            f"init(): job_config must be an actorhub.job_config.JobConfig, not {type(job_config).__name__}"
        )
    out.ignored.extend(job_config.ignored_settings())
    out.namespace = job_config.ray_namespace
    out.default_actor_lifetime = job_config.default_actor_lifetime
    return dict(job_config.runtime_env)


def _str_or_none(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if name == "_tracing_startup_hook" and callable(value):
        # Ray takes "module:function" too; a function object cannot reach the workers by name.
        module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
        if module and qualname and "<" not in qualname:
            return f"{module}:{qualname}"
    raise OptionsError(f"init(): {name}={value!r}: must be a str")


def warning_line(ignored: list[str]) -> str:
    return "actorhub.init: ignoring " + "; ".join(ignored)


def ignored_when_joining(
    *, num_cpus: float | None, object_store_memory: int | None, tracing_startup_hook: object | None,
    num_gpus: object = None, resources: object = None, dashboard: Mapping[str, object] | None = None,
) -> list[str]:
    """Options that shape the processes of a cluster init() starts, and so do nothing when it joins one."""
    ignored = []
    for name, value in (("num_cpus", num_cpus), ("object_store_memory", object_store_memory),
                        ("_tracing_startup_hook", tracing_startup_hook), ("num_gpus", num_gpus),
                        ("resources", resources), *(dashboard or {}).items()):
        if value is not None:
            ignored.append(f"{name}={value!r} (joined a running cluster, whose nodes have their own)")
    return ignored


def configure_logging(logger: logging.Logger, level: str, logging_format: str | None) -> None:
    """actorhub's logger at `level`; with a format, its records go to stderr in that format (as
    Ray's logger does), once however often init() runs."""
    logger.setLevel(level.upper())
    if logging_format is None:
        return
    handler = next((h for h in logger.handlers if getattr(h, _OWN_HANDLER, False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        setattr(handler, _OWN_HANDLER, True)
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(logging_format))


_OWN_HANDLER = "_actorhub_init_handler"
